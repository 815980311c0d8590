"""The console commands: one module per job, each with ``main(argv=None) -> int``.

:data:`COMMANDS` is the one table of commands: ``lkdn-infer`` runs :func:`lkdn.commands.inference.main`,
and so on; setup.py installs each as a console script (:func:`entry_points`), run with the Python of the
environment it was installed in (``.venv/bin/lkdn-test -opt ...`` needs no ``source .venv/bin/activate``).
The commands work from an installed wheel as from the clone; relative paths in the options are read from
the current folder.

Every ``main`` goes through :func:`lkdn.utils.run` (the :func:`lkdn.utils.command` decorator): a clear
error (:class:`lkdn.errors.LkdnError`) is one ``error: <message>`` line on stderr and exit status 1,
``LKDN_TRACEBACK=1`` shows its traceback instead, and a Ctrl-C is one line and status 130. Anything
else is a bug and keeps its traceback. argparse's own usage errors keep status 2.

This package imports only the standard library: each command builds its parser and reads its
command line before it imports torch, so ``--help`` and usage errors are fast.
"""

from __future__ import annotations

#: command -> module of this package holding its ``main``
COMMANDS = {
    "lkdn-train": "train", "lkdn-test": "test", "lkdn-infer": "inference", "lkdn-reparam": "reparameterize",
    "lkdn-export-onnx": "export_onnx", "lkdn-export-openvino": "export_openvino", "lkdn-export-ncnn": "export_ncnn",
    "lkdn-profile": "profile_model", "lkdn-download": "download", "lkdn-convert": "convert_checkpoint",
    "lkdn-compare": "compare_models", "lkdn-ntire": "ntire_esr", "lkdn-demo": "demo", "lkdn-leaderboard": "leaderboard",
    "lkdn-plot-curves": "plot_curves", "lkdn-compare-images": "compare_images",
    "lkdn-strip-checkpoint": "strip_checkpoint", "lkdn-make-lr": "make_lr",
    "lkdn-extract-subimages": "extract_subimages", "lkdn-create-lmdb": "create_lmdb",
}

#: the backends of ``--backend`` (without ``auto``), as :data:`lkdn.backends.BACKENDS` (a test checks they agree);
#: written here so that building a parser imports no torch
BACKENDS = ("torch", "onnxruntime", "openvino", "ncnn")
#: exported files a command runs as they are (suffix -> backend), as :data:`lkdn.backends.files.SUFFIXES`
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".param": "ncnn"}
#: the years of ``lkdn-ntire --year``, as the keys of :data:`lkdn.ntire.SCORE_WEIGHTS`
NTIRE_YEARS = (2024, 2025, 2026)


def entry_points() -> list[str]:
    """The ``console_scripts`` of setup.py: ``lkdn-infer = lkdn.commands.inference:main`` and so on."""
    return [f"{command} = lkdn.commands.{module}:main" for command, module in COMMANDS.items()]
