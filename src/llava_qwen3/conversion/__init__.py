"""Building and converting checkpoints."""

from .tiny import build_tiny_checkpoint, tiny_config, train_tokenizer

__all__ = ["build_tiny_checkpoint", "tiny_config", "train_tokenizer"]
