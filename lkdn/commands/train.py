"""Train a network: ``lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml`` (``python lkdn/train.py``).

Thin entry point (HAT's pattern): :func:`lkdn.training.pipeline.train_pipeline` does the work. Options:
``--auto-resume``, ``--debug``, ``--launcher none|pytorch|slurm``, ``--force-yml key=value ...``,
``--root-path`` (BasicSR's underscore spellings are accepted too). Several GPUs:
``torchrun --nproc_per_node=N lkdn/train.py -opt ... --launcher pytorch``.
Errors in the options, the data, a checkpoint, or a diverged run are one ``error: ...`` line
(exit status 1; ``LKDN_TRACEBACK=1`` shows the traceback). SIGINT / SIGTERM in training save a
state and stop (:mod:`lkdn.training.state`); a Ctrl-C during the set-up, or a second one while
saving, stops at once with one line and exit status 130.
"""

from __future__ import annotations

from collections.abc import Sequence

from lkdn.utils import command, parse_train_args

INTERRUPTED = ("interrupted: nothing more was saved; every state written so far is complete (resume with "
               "--auto-resume)")


@command(interrupted=INTERRUPTED, clear=(ValueError,))
def main(argv: Sequence[str] | None = None) -> int:
    """Train; 0, 128 + signal when a signal stopped it (a state saved), or 1 after one ``error: ...`` line
    (options, data, checkpoints, divergence)."""
    parse_train_args(argv)  # parsed before torch is imported, so --help is fast
    from lkdn.training.pipeline import train_pipeline

    return train_pipeline(argv=argv)
