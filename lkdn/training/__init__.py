"""Training machinery: the pipeline behind ``lkdn/train.py`` and the parts it is made of.

* :mod:`lkdn.training.pipeline`: command line, experiment folders, the training loop.
* :mod:`lkdn.training.dist`: one process, ``torchrun`` or slurm; CUDA or CPU (nccl / gloo); SIGINT/SIGTERM
  to "save a state, then stop".
* :mod:`lkdn.training.data`: training and validation loaders with exact, resumable sampling.
* :mod:`lkdn.training.optim`: optimizers and learning-rate schedulers by name.
* :mod:`lkdn.training.ema`: the weight EMA (BatchNorm population mode is :mod:`lkdn.models.sr_model`'s).
* :mod:`lkdn.training.state`: random states, training states, run locks and folders.
* :mod:`lkdn.training.records`: log lines, TensorBoard scalars and ``*.jsonl`` records.
"""
