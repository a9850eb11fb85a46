"""Building and converting checkpoints: from pretrained parts, from transformers' Llava, tiny random ones."""

from .build import build_checkpoint
from .tiny import build_tiny_checkpoint, tiny_config, train_tokenizer

__all__ = ["build_checkpoint", "build_tiny_checkpoint", "tiny_config", "train_tokenizer"]
