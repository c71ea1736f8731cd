"""Training engine: the paper's GAN recipe, data parallelism over torchrun processes, exact resume.

Modules (imported one by one, so that reading the options does not import torch):
options (TrainConfig: the `train:` section), losses (logistic loss, R1), ema, trainer (one D + G
step), distributed (process group, gradient averaging), checkpoint (atomic, verified), loop (the
training loop and its outputs), benchmark (training images/s)."""
