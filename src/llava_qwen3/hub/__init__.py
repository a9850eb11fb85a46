"""Publishing to the Hugging Face Hub: model cards and push."""

from .model_card import count_parameters, render_model_card, write_model_card
from .push import checkpoint_files, plan_push, push_to_hub

__all__ = ["checkpoint_files", "count_parameters", "plan_push", "push_to_hub", "render_model_card", "write_model_card"]
