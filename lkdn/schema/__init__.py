"""Option files declared once: pydantic models of every key (type, default, description), and their checks.

Each error names the file, the key's line in it, the key path (``train.optim_g.lr``) and the
value; an unknown key also names the nearest valid key. Checks run before any work starts,
after ``--force-yml`` overrides are applied, so overrides are validated the same way.

The schema is BasicSR's (train and test), plus this project's additions. Sections whose keys
depend on a registered class (``network_g``, ``train.optim_g``, ``train.scheduler``, losses)
are checked against that class's signature.

* :mod:`lkdn.schema.checks`: the value checks (bounds, names, templates, learning rate,
  scheduler lists, signatures of registered classes) and the limits (:data:`MAX_WORKERS`...).
* :mod:`lkdn.schema.models`: the declarations, one model per section.
* :mod:`lkdn.schema.validation`: :func:`validate_options` (messages with file, line, key path
  and value), :func:`fill_defaults` and :func:`without_filled`.
* :mod:`lkdn.schema.docs`: ``docs/options.md``'s key tables and ``docs/options.schema.json``
  (``python -m lkdn.schema --write``).
"""

from lkdn.schema.checks import (
    HR_ONLY_DATASETS,
    MAX_ENLARGE_RATIO,
    MAX_LR,
    MAX_SCALE,
    MAX_SEED,
    MAX_WORKERS,
    METRIC_TYPES,
    SchemaError,
    key_lines,
    long_integer_errors,
)
from lkdn.schema.models import TOP, OptionFile
from lkdn.schema.validation import fill_defaults, validate_options, without_filled

__all__ = [
    "HR_ONLY_DATASETS", "MAX_ENLARGE_RATIO", "MAX_LR", "MAX_SCALE", "MAX_SEED", "MAX_WORKERS", "METRIC_TYPES", "TOP",
    "OptionFile", "SchemaError", "fill_defaults", "key_lines", "long_integer_errors", "validate_options",
    "without_filled",
]
