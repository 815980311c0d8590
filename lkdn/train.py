"""Train a network: ``lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml`` (``python lkdn/train.py``).

Thin entry point (HAT's pattern): importing :mod:`lkdn` registers our architectures, datasets
and models, then :func:`lkdn.training.pipeline.train_pipeline` does the work. Options:
``--auto-resume``, ``--debug``, ``--launcher none|pytorch|slurm``, ``--force-yml key=value ...``,
``--root-path`` (BasicSR's underscore spellings are accepted too). Several GPUs: ``torchrun --nproc_per_node=N lkdn/train.py -opt ... --launcher pytorch``.
Errors in the options, the data, a checkpoint, or a diverged run are one ``error: ...`` line
(exit status 1; ``LKDN_TRACEBACK=1`` shows the traceback). SIGINT / SIGTERM in training save a
state and stop (:mod:`lkdn.training.interrupt`); a Ctrl-C during the set-up, or a second one while
saving, stops at once with one line and exit status 130.
"""

import os
import os.path as osp
import signal
import sys

if __name__ == "__main__":  # run as a script: the repository root first, this folder out (its names shadow)
    _here = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [osp.dirname(_here)] + [p for p in sys.path if osp.abspath(p or ".") != _here]

import lkdn  # noqa: E402,F401 (registers archs, datasets and models before the options are read)
from lkdn.training.pipeline import CLEAR_ERRORS, train_pipeline  # noqa: E402


def main() -> int:
    """Train; a clear error (options, data, checkpoints, divergence) is one ``error: ...`` line, status 1."""
    try:
        return train_pipeline()
    except KeyboardInterrupt:  # Ctrl-C in the set-up (the loop saves and stops by itself), or a second one
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        print("interrupted: nothing more was saved; every state written so far is complete (resume with "
              "--auto_resume)", file=sys.stderr)
        return 128 + signal.SIGINT
    except CLEAR_ERRORS as err:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        if not getattr(err, "lkdn_logged", False):
            print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
