"""sealab: classifiers on frozen features of pre-trained vision models."""

__version__ = "0.1.0"
