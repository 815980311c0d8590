"""Training machinery: the pipeline behind ``lkdn/train.py`` and the parts it is made of.

* :mod:`lkdn.training.pipeline`: command line, experiment folders, the training loop.
* :mod:`lkdn.training.dist`: one process, ``torchrun`` or slurm; CUDA or CPU (nccl / gloo).
* :mod:`lkdn.training.data`: training and validation loaders with exact, resumable sampling.
* :mod:`lkdn.training.optim`, :mod:`lkdn.training.schedulers`: optimizer and scheduler registries.
* :mod:`lkdn.training.ema`, :mod:`lkdn.training.batchnorm`: weight EMA, BatchNorm population mode.
* :mod:`lkdn.training.rng`, :mod:`lkdn.training.state`: random states, training states and folders.
* :mod:`lkdn.training.records`: log lines, TensorBoard scalars and ``*.jsonl`` records.
* :mod:`lkdn.training.interrupt`: SIGINT/SIGTERM to "save a state, then stop".
"""
