"""Training models. Importing this package imports every ``*_model.py`` module in this folder,
which registers its classes in :data:`MODEL_REGISTRY` (BasicSR's convention);
:func:`build_model` builds the one ``model_type`` names."""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

from lkdn.models.registry import MODEL_REGISTRY

for _file in sorted(Path(__file__).parent.glob("*_model.py")):
    importlib.import_module(f"lkdn.models.{_file.stem}")


def build_model(opt: dict[str, Any], **kwargs: Any) -> Any:
    """Build ``MODEL_REGISTRY[opt['model_type']]`` (default ``SRModel``) with ``opt`` and ``kwargs``."""
    name = opt.get("model_type", "SRModel")
    names = sorted(MODEL_REGISTRY.keys())
    if name not in MODEL_REGISTRY:
        match = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ValueError(f"model_type: unknown model {name!r}{hint} (known: {', '.join(names)})")
    return MODEL_REGISTRY.get(name)(opt, **kwargs)


__all__ = ["MODEL_REGISTRY", "build_model"]
