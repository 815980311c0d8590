"""Training models. Importing this package imports every ``*_model.py`` module in this folder,
which registers its classes in :data:`MODEL_REGISTRY` (BasicSR's convention);
:func:`build_model` builds the one ``model_type`` names."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lkdn.models.registry import MODEL_REGISTRY
from lkdn.utils import unknown_name

for _file in sorted(Path(__file__).parent.glob("*_model.py")):
    importlib.import_module(f"lkdn.models.{_file.stem}")


def build_model(opt: dict[str, Any], **kwargs: Any) -> Any:
    """Build ``MODEL_REGISTRY[opt['model_type']]`` (declared default ``SRModel``, filled in by the validation) with ``opt`` and ``kwargs``."""
    name = opt["model_type"]
    if name not in MODEL_REGISTRY:
        raise ValueError(unknown_name("model", name, MODEL_REGISTRY.keys(), where="model_type"))
    return MODEL_REGISTRY.get(name)(opt, **kwargs)


__all__ = ["MODEL_REGISTRY", "build_model"]
