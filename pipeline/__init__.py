"""INR-GAN reproduction pipeline: models, data, training, metrics and analysis (the library)."""

__version__ = "0.1.0"
