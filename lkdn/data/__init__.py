"""Datasets. Importing this package imports every ``*_dataset.py`` module in this folder, which
registers its classes in basicsr's ``DATASET_REGISTRY`` (BasicSR's convention), beside basicsr's
own (``PairedImageDataset``...); build them with ``basicsr.data.build_dataset``."""

import importlib
from pathlib import Path

for _file in sorted(Path(__file__).parent.glob("*_dataset.py")):
    importlib.import_module(f"lkdn.data.{_file.stem}")
