"""A tiny model trained from scratch on the synthetic shapes names colour, shape and count of freshly drawn
pictures; trained on blanked pictures it stays near chance. Proof that the image path, masks and merge are right."""

from __future__ import annotations

import pytest

from llava_qwen3.training.shapes_recipe import shapes_accuracy, train_on_shapes

# Trains two models (2 minutes); the image path it proves is the same code on both transformers lines, whose
# training steps test_training.py checks on each.
pytestmark = [pytest.mark.slow, pytest.mark.one_line]


def test_trained_from_scratch_it_reads_the_pictures_and_blanked_it_cannot(demo_model):
    _, model, processor = demo_model
    fresh = shapes_accuracy(model, processor, "train")
    unseen_pairs = shapes_accuracy(model, processor, "held_out")
    blank_model, blank_processor = train_on_shapes(blank=True)
    blank = shapes_accuracy(blank_model, blank_processor, "train", blank=True)
    print(f"fresh pictures: {fresh}\nunseen colour-shape pairs: {unseen_pairs}\nblank pictures: {blank}")
    assert all(value >= 0.9 for value in fresh.values()), fresh
    # Chance is 1/4 for colour and 1/3 for shape and count: blanked pictures carry nothing to learn from.
    assert all(value <= 0.45 for value in blank.values()), blank
