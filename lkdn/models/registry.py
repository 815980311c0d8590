"""The registry of training models (``model_type`` in YAML).

It is this project's own registry rather than basicsr's ``MODEL_REGISTRY``: basicsr already
registers an ``SRModel`` there (built on its CUDA-only ``BaseModel``), and ``model_type: SRModel``
in an official config must mean ours.
"""

from basicsr.utils.registry import Registry

MODEL_REGISTRY = Registry("lkdn_model")
