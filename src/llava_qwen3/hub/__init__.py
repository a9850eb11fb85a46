"""Publishing to the Hugging Face Hub: model cards."""

from .model_card import count_parameters, render_model_card, write_model_card

__all__ = ["count_parameters", "render_model_card", "write_model_card"]
