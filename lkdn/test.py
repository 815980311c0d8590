"""``python lkdn/test.py -opt ...``: BasicSR's test command, which is ``lkdn-test`` (:mod:`lkdn.commands.test`).

As a module: :func:`main` is the command (an exit status, as ``lkdn.train.main``), :func:`score` runs the
test and returns its metrics (``metrics.json``), raising clear errors.
"""

from lkdn.commands.test import DatasetMissingError, check_inputs, main, parse_args, score, test_pipeline

__all__ = ["DatasetMissingError", "check_inputs", "main", "parse_args", "score", "test_pipeline"]

if __name__ == "__main__":
    raise SystemExit(main())
