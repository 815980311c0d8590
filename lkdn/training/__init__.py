"""Training machinery: the pipeline behind ``lkdn/train.py`` and the parts it is made of.

* :mod:`lkdn.training.pipeline`: command line, experiment folders, the training loop, and what a run
  records (log lines, TensorBoard and W&B scalars, ``*.jsonl`` files, the best metrics).
* :mod:`lkdn.training.state`: one process, ``torchrun`` or slurm; CUDA or CPU (nccl / gloo); SIGINT/SIGTERM
  to "save a state, then stop"; random states, training states, run locks and folders.
* :mod:`lkdn.training.data`: training and validation loaders with exact, resumable sampling.
* :mod:`lkdn.training.optim`: losses, optimizers and learning-rate schedulers by name.
* :mod:`lkdn.training.ema`: the weight EMA (BatchNorm population mode is :mod:`lkdn.models.sr_model`'s).
"""
