"""Install lkdn. Runtime requirements are read from requirements.txt."""

import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def commands() -> list[str]:
    """The console commands: ``lkdn-infer = lkdn.commands.inference:main`` for each entry of the table
    ``COMMANDS`` of lkdn/commands/__init__.py (read from the file, not imported; a test checks this list
    against ``lkdn.commands.entry_points()``)."""
    tree = ast.parse((HERE / "lkdn" / "commands" / "__init__.py").read_text(encoding="utf-8"))
    table = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["COMMANDS"])
    return [f"{command} = lkdn.commands.{module}:main" for command, module in table.items()]


COMMANDS = commands()

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
        "dev": ["pytest>=7", "hypothesis>=6", "ruff>=0.5", "jsonschema>=4"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "profile": ["fvcore>=0.1.5"],
        "spandrel": ["spandrel>=0.4"],
        "openvino": ["openvino>=2025.0", "nncf>=2.14", "onnx>=1.15"],  # OpenVINO reads our ONNX export
        "ncnn": ["ncnn>=1.0.20240102", "pnnx>=20240226"],
    },
)
