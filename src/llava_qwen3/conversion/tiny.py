"""Tiny checkpoints with random weights and a real, freshly trained byte-level BPE tokenizer.

They exercise the real loading and generation code without downloads: tests build them, and the demo builds one
when no trained checkpoint is at hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, Qwen2TokenizerFast

from ..modeling import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration
from ..processing import IMAGE_TOKEN, LlavaQwen3Processor
from .build import CLIPImageProcessorPil, SiglipImageProcessorPil, finish_generation_config

# Qwen2/Qwen3's pre-tokenizer split, followed by byte-level encoding, as in their tokenizer.json.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = {
    "colour": ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"],
    "shape": ["circle", "square", "triangle", "star", "cross", "diamond"],
    "count": ["one", "two", "three", "four", "zero", "1", "2", "3", "4"],
    "place": ["left", "right", "top", "bottom", "centre", "middle", "corner"],
}
_TEMPLATES = [
    "There is a {colour} {shape} on the {place}.",
    "What colour is the {shape}? It is {colour}.",
    "How many {shape}s are there? {count}.",
    "Describe the image. A picture with {count} {colour} {shape}s near the {place}.",
    "user: what is in this picture? assistant: I see a {colour} {shape}.",
]


def tokenizer_corpus() -> list[str]:
    """Sentences about coloured shapes, the domain of the project's synthetic data."""
    sentences = []
    for template, colour, shape, count, place in itertools.product(
        _TEMPLATES, _WORDS["colour"], _WORDS["shape"], _WORDS["count"][:4], _WORDS["place"][:3]
    ):
        sentences.append(template.format(colour=colour, shape=shape, count=count, place=place))
    return sentences


def train_tokenizer(
    corpus: list[str] | None = None, vocab_size: int = 512, with_image_token: bool = True
) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer built the way Qwen's is, with Qwen's special tokens (and `<image>`)."""
    special_tokens = QWEN_SPECIAL_TOKENS + ([IMAGE_TOKEN] if with_image_token else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or tokenizer_corpus(), trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=special_tokens[1:],  # the first, <|endoftext|>, is the pad token
        padding_side="left",
    )


def tiny_config(
    vocab_size: int,
    image_token_id: int,
    vision: str = "clip",
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int | list[int] = -2,
    vision_feature_select_strategy: str = "default",
    image_size: int = 32,
    tie_word_embeddings: bool = False,
    vision_overrides: dict[str, object] | None = None,
    text_overrides: dict[str, object] | None = None,
) -> LlavaQwen3Config:
    """A config a few hundred kilobytes in size: 2-layer tower, 2-layer Qwen3.

    `vision_overrides` and `text_overrides` replace entries of the sub-configs (e.g. `{"head_dim": 32}` for engines
    whose attention kernels need wider heads).
    """
    vision_config = {
        "model_type": {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}[vision],
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        **(vision_overrides or {}),
    }
    text_config = {
        "model_type": "qwen3",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tie_word_embeddings,
        **(text_overrides or {}),
    }
    return LlavaQwen3Config(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
    )


def image_processor_for(config: LlavaQwen3Config) -> CLIPImageProcessorPil | SiglipImageProcessorPil:
    """transformers' own (Pillow) image processor for the config's tower, at the tower's input size."""
    size = config.vision_config.image_size
    if config.vision_config.model_type == "clip_vision_model":
        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return SiglipImageProcessorPil(size={"height": size, "width": size})


def build_tiny_checkpoint(
    folder: str | Path, vision: str = "clip", seed: int = 0, **config_overrides: object
) -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    """Writes a tiny random model, its processor and its generation config to `folder`, and returns both."""
    tokenizer = train_tokenizer()
    config = tiny_config(
        len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision=vision, **config_overrides
    )
    torch.manual_seed(seed)
    model = LlavaQwen3ForConditionalGeneration(config).eval()
    finish_generation_config(model.generation_config, tokenizer, config.image_token_id)
    processor = LlavaQwen3Processor(image_processor_for(config), tokenizer, image_seq_length=config.image_seq_length)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor
