"""``python lkdn/train.py -opt ...``: BasicSR's training command, which is ``lkdn-train`` (:mod:`lkdn.commands.train`)."""

from lkdn.commands.train import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
