"""Install lkdn. Runtime requirements are read from requirements.txt."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


# Console commands (lkdn/cli.py; a test checks this list against lkdn.cli.entry_points()).
COMMANDS = ["lkdn-train = lkdn.cli:train", "lkdn-test = lkdn.cli:test"] + [
    f"{command} = lkdn.cli:{script}" for command, script in (
        ("lkdn-reparam", "reparameterize"), ("lkdn-infer", "inference"), ("lkdn-export-onnx", "export_onnx"),
        ("lkdn-export-openvino", "export_openvino"), ("lkdn-export-ncnn", "export_ncnn"),
        ("lkdn-profile", "profile_model"), ("lkdn-download", "download"), ("lkdn-convert", "convert_checkpoint"),
        ("lkdn-compare", "compare_models"), ("lkdn-ntire", "ntire_esr"), ("lkdn-demo", "demo"),
        ("lkdn-leaderboard", "leaderboard"), ("lkdn-plot-curves", "plot_curves"),
        ("lkdn-compare-images", "compare_images"), ("lkdn-strip-checkpoint", "strip_checkpoint"),
        ("lkdn-make-lr", "make_lr"), ("lkdn-extract-subimages", "extract_subimages"),
        ("lkdn-create-lmdb", "create_lmdb"),
    )
]

# The distribution is lkdn-sr: "lkdn" on the package index is another project. The import name is lkdn.
setup(
    name="lkdn-sr",
    version="0.1.0",
    description="BasicSR-style training and testing for efficient super-resolution: LKDN, RFDN, BSRN and kin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["lkdn", "lkdn.*"]),
    entry_points={"console_scripts": COMMANDS},
    install_requires=requirements(),
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6", "ruff>=0.5"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "profile": ["fvcore>=0.1.5"],
        "spandrel": ["spandrel>=0.4"],
        "openvino": ["openvino>=2025.0", "nncf>=2.14", "onnx>=1.15"],  # OpenVINO reads our ONNX export
        "ncnn": ["ncnn>=1.0.20240102", "pnnx>=20240226"],
    },
)
