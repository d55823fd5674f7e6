"""ltune: label-aware parameter-efficient fine-tuning of frozen language models."""

__version__ = "0.1.0"
