"""Train a network: ``python lkdn/train.py -opt options/train/LKDN/train_LKDN_x4.yml``.

Thin entry point (HAT's pattern): importing :mod:`lkdn` registers our architectures, datasets
and models, then :func:`lkdn.training.pipeline.train_pipeline` does the work. Options:
``--auto_resume``, ``--debug``, ``--launcher none|pytorch|slurm``, ``--force_yml key=value ...``,
``--root_path``. Several GPUs: ``torchrun --nproc_per_node=N lkdn/train.py -opt ... --launcher pytorch``.
"""

import os.path as osp
import sys

if __name__ == "__main__":  # run as a script: the repository root first, this folder out (its names shadow)
    _here = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [osp.dirname(_here)] + [p for p in sys.path if osp.abspath(p or ".") != _here]

import lkdn  # noqa: E402,F401 (registers archs, datasets and models before the options are read)
from lkdn.training.pipeline import train_pipeline  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_pipeline())
