"""transformers' own common test suites run against LLaVA-Qwen3: `ModelTesterMixin` (with `ConfigTester`) for both
model classes and `ProcessorTesterMixin` for the processor, from the source distribution of the installed
transformers version (see conftest.py).

Every upstream test that does not apply is listed in `NOT_APPLICABLE` with its reason and reported as skipped with
that reason (`pytest -rs` prints them; docs/testing.md has the table); nothing is skipped silently.
"""

from __future__ import annotations

import unittest

import pytest
import torch
import transformers
from transformers_upstream_tests.test_configuration_common import ConfigTester
from transformers_upstream_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor
from transformers_upstream_tests.test_processing_common import ProcessorTesterMixin

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Model, LlavaQwen3Processor
from llava_qwen3.conversion.tiny import image_processor_for, train_tokenizer
from llava_qwen3.processing import IMAGE_TOKEN

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
MISSING_FROM_SDIST = "needs a module transformers' source distribution does not ship ({}); not run here"

REFUSES_PLACEHOLDERS_WITHOUT_PIXELS = (
    "by design: the test feeds {} without pixel_values, which this model refuses (built-in Llava reads them as "
    "text); {}"
)
REFUSES_VIDEO_AND_AUDIO = (
    "by design: the test passes videos and audio because the processor's signature names them; this processor "
    "refuses them with a ValueError (the model takes neither) where built-in processors without a video or audio "
    "processor drop them silently"
)
# Upstream tests that cannot apply, by name or name prefix (parameterized variants), with the reason.
MODEL_NOT_APPLICABLE = {
    "test_generation_tester_mixin_inheritance": MISSING_FROM_SDIST.format("tests/generation/test_utils.py"),
    "test_eager_matches_sdpa_inference": REFUSES_PLACEHOLDERS_WITHOUT_PIXELS.format(
        "input_ids holding image placeholders",
        "eager-vs-SDPA agreement is tested in tests/test_modeling.py::test_sdpa_and_eager_attention_agree",
    ),
    "test_model_rope_scaling_from_config": REFUSES_PLACEHOLDERS_WITHOUT_PIXELS.format(
        "random input_ids, placeholders among them",
        "the language model is transformers' own Qwen3, whose RoPE scaling its own tests cover",
    ),
}
LEGACY_HEAD_PRUNING = (
    "transformers 4.x only: head pruning and head masking are BERT-era features that transformers' own Qwen3 and "
    "CLIP/SigLIP modules (which this model is built from) do not implement; transformers 5 dropped them"
)
MODEL_NOT_APPLICABLE |= {"test_head_pruning": LEGACY_HEAD_PRUNING, "test_headmasking": LEGACY_HEAD_PRUNING}
PROCESSOR_NOT_APPLICABLE = {
    "test_flat_kwarg_applied_when_modality_dict_lacks_it": REFUSES_VIDEO_AND_AUDIO,
    "test_model_input_names": REFUSES_VIDEO_AND_AUDIO,
    "test_processor_text_has_no_visual": REFUSES_VIDEO_AND_AUDIO,
    "test_apply_chat_template_video_frame_sampling": REFUSES_VIDEO_AND_AUDIO,
}


def _mark_not_applicable(test_class: type, reasons: dict[str, str]) -> type:
    """Replaces each listed upstream test (and its parameterized variants) by a skip carrying its reason."""
    for prefix, reason in reasons.items():
        for name in [name for name in dir(test_class) if name == prefix or name.startswith(f"{prefix}_")]:
            setattr(test_class, name, unittest.skip(reason)(getattr(test_class, name)))
    return test_class


@pytest.fixture(autouse=True, scope="module")
def listed_like_a_builtin_model():
    """transformers' suites tell a base model from a head by its class name in the auto classes' name tables
    (which heads get `labels`, which classes train); a built-in model is listed there, this one is added for the
    duration of these tests."""
    from transformers.models.auto import modeling_auto

    tables = {
        "MODEL_MAPPING_NAMES": "LlavaQwen3Model",
        "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES": "LlavaQwen3ForConditionalGeneration",
        "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES": "LlavaQwen3ForConditionalGeneration",  # 4.x only
    }
    with pytest.MonkeyPatch.context() as patch:
        for table, class_name in tables.items():
            if hasattr(modeling_auto, table):
                patch.setitem(getattr(modeling_auto, table), LlavaQwen3Config.model_type, class_name)
        yield


class LlavaQwen3ModelTester:
    """Tiny configurations and inputs in the shape transformers' common model tests expect."""

    def __init__(self, parent: unittest.TestCase) -> None:
        self.parent = parent
        self.batch_size = 3
        self.text_seq_length = 7
        self.image_token_id = 3
        self.pad_token_id = 1
        self.text_config = {
            "model_type": "qwen3",
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 512,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": False,
        }
        self.vision_config = {
            "model_type": "clip_vision_model",
            "image_size": 8,
            "patch_size": 2,
            "num_channels": 3,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
        self.num_image_tokens = (8 // 2) ** 2
        self.seq_length = self.text_seq_length + self.num_image_tokens
        self.encoder_seq_length = self.seq_length
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.vocab_size = self.text_config["vocab_size"]
        self.is_training = True

    def get_config(self) -> LlavaQwen3Config:
        return LlavaQwen3Config(
            text_config=self.text_config,
            vision_config=self.vision_config,
            image_token_id=self.image_token_id,
            vision_feature_layer=-1,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[LlavaQwen3Config, dict[str, torch.Tensor]]:
        config = self.get_config()
        size = self.vision_config["image_size"]
        pixel_values = floats_tensor([self.batch_size, 3, size, size])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 4) + 4  # above the specials
        input_ids[:, : self.num_image_tokens] = self.image_token_id
        attention_mask = torch.ones_like(input_ids)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class LlavaQwen3ModelTest(ModelTesterMixin, unittest.TestCase):
    """transformers' `ModelTesterMixin` on `LlavaQwen3Model` and `LlavaQwen3ForConditionalGeneration`."""

    all_model_classes = (LlavaQwen3Model, LlavaQwen3ForConditionalGeneration)
    _is_composite = True
    # The tower's final norm (and SigLIP's pooling head) are not on the image path (LLaVA reads an inner layer), so
    # they get no gradient: the gradient-checkpointing tests run with their "every parameter has a gradient" check
    # off; the rest of those tests (same non-zero gradients with and without checkpointing) runs.
    test_all_params_have_gradient = False

    def setUp(self) -> None:
        self.model_tester = LlavaQwen3ModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=LlavaQwen3Config,
            has_text_modality=False,
            # image_seq_length is derived from the tower (read-only), not a setting as in built-in Llava's config.
            common_properties=["image_token_id", "image_token_index", "vision_feature_layer"],
        )

    def test_config(self) -> None:
        self.config_tester.run_common_tests()


_mark_not_applicable(LlavaQwen3ModelTest, MODEL_NOT_APPLICABLE)


class LlavaQwen3ProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    """transformers' `ProcessorTesterMixin` on `LlavaQwen3Processor` with a tiny Qwen-style tokenizer."""

    processor_class = LlavaQwen3Processor
    image_token = IMAGE_TOKEN

    @classmethod
    def _setup_tokenizer(cls):
        return train_tokenizer()

    @classmethod
    def _setup_image_processor(cls):
        return image_processor_for(LlavaQwen3Config(vision_config={"image_size": 32, "patch_size": 8}))

    @staticmethod
    def prepare_processor_dict() -> dict:
        return {"image_seq_length": 16}

    def setUp(self) -> None:
        if TRANSFORMERS_MAJOR < 5:  # 4.x's mixin reads the components from a folder the test writes
            import tempfile

            self.tmpdirname = tempfile.mkdtemp()
            processor = self.processor_class(
                self._setup_image_processor(), self._setup_tokenizer(), **self.prepare_processor_dict()
            )
            processor.save_pretrained(self.tmpdirname)


_mark_not_applicable(LlavaQwen3ProcessorTest, PROCESSOR_NOT_APPLICABLE)
