"""``python lkdn/test.py -opt ...``: BasicSR's test command, which is ``lkdn-test`` (:mod:`lkdn.commands.test`).

As a module, :func:`main` runs the test and returns its metrics (``metrics.json``), raising clear errors.
"""

from lkdn.commands.test import DatasetMissingError, check_inputs, parse_args, test_pipeline
from lkdn.commands.test import score as main

__all__ = ["DatasetMissingError", "check_inputs", "main", "parse_args", "test_pipeline"]

if __name__ == "__main__":
    from lkdn.commands.test import main as command

    raise SystemExit(command())
