"""Compose a LLaVA-Qwen3 checkpoint from pretrained parts: a CLIP/SigLIP tower, a Qwen3 causal LM, a projector.

    llava-qwen3-build --vision DIR_OR_ID --text DIR_OR_ID --output DIR [--projector FILE] [--projector-type T]
                      [--vision-feature-layer N] [--vision-feature-select-strategy S] [--dtype D]

Every input is checked before anything is written; the folder is written to a temporary sibling and renamed into
place at the end, so a failure leaves no half-written checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    CLIPVisionModel,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3ForCausalLM,
    SiglipVisionModel,
)

from ..commands import exit_on_error
from ..modeling import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration
from ..modeling.configuration_llava_qwen3 import PROJECTOR_TYPES, VISION_FEATURE_SELECT_STRATEGIES
from ..processing import IMAGE_TOKEN, LlavaQwen3Processor
from .writing import (
    DEFAULT_MAX_SHARD_SIZE,
    DTYPES,
    cast,
    check_dtype,
    check_output_folder,
    print_folder,
    write_checkpoint,
)

# The image processors the package builds and loads are Pillow's on both transformers lines: their pixels are the
# ones the browser page reproduces (pil_resize.js) and the tests compare against, and they need no torchvision.
# transformers 5 names them `<Model>ImageProcessorPil` and picks them with backend="pil" (its plain
# `CLIPImageProcessor` is the torchvision one, which falls back to Pillow with a warning where torchvision is missing);
# in 4.57 the plain names are Pillow's and use_fast=False picks them.
try:
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    PIL_IMAGE_PROCESSOR = {"backend": "pil"}
except ImportError:  # transformers 4.57; tiny.py builds with these classes
    from transformers import CLIPImageProcessor as CLIPImageProcessorPil  # noqa: F401
    from transformers import SiglipImageProcessor as SiglipImageProcessorPil  # noqa: F401

    PIL_IMAGE_PROCESSOR = {"use_fast": False}

QWEN_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
TOWER_CLASSES = {"clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel}
TOWER_CLASSES |= {"siglip": SiglipVisionModel, "siglip_vision_model": SiglipVisionModel}
# LLaVA's mm_projector is nn.Sequential(Linear, GELU, Linear): indices 0 and 2.
LLAVA_PROJECTOR_KEYS = {"mm_projector.0.": "linear_1.", "mm_projector.2.": "linear_2."}


def read_projector(path: Path) -> dict[str, torch.Tensor]:
    """Projector weights from a safetensors file or LLaVA's `mm_projector.bin`, under this model's names."""
    if not path.is_file():
        raise ValueError(f"--projector {path} is not a file.")
    if path.suffix == ".safetensors":
        weights = load_file(path)
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    renamed = {}
    for name, tensor in weights.items():
        short = name.removeprefix("model.").removeprefix("multi_modal_projector.")
        for llava_prefix, ours in LLAVA_PROJECTOR_KEYS.items():
            if short.startswith(llava_prefix):
                short = ours + short.removeprefix(llava_prefix)
        renamed[short] = tensor
    return renamed


def load_source_config(source: str, option: str, expected_model_type: str | None = None) -> object:
    """The config of an input checkpoint, or a ValueError naming the command-line `option` that points nowhere (or
    at a model of another type than `expected_model_type`)."""
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"{option} {source!r} is not a checkpoint folder or reachable repo: {error}") from error
    if expected_model_type is not None and config.model_type != expected_model_type:
        raise ValueError(
            f"{option} {source!r} is a {config.model_type!r} model; expected a {expected_model_type!r} checkpoint."
        )
    return config


def add_placeholder_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, token: str) -> int:
    """Adds `token` as a special token; its embedding (and output) row starts at the mean of the rows before it."""
    if token in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer already has {token!r}; choose another placeholder.")
    tokenizer.add_tokens([token], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    # Qwen pads its embedding matrix beyond the tokenizer, so the new id may fall on an existing, untrained row.
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[token_id] = embeddings[:token_id].mean(dim=0)
        head = model.get_output_embeddings().weight
        if head.data_ptr() != embeddings.data_ptr():
            head[token_id] = head[:token_id].mean(dim=0)
    return token_id


def finish_generation_config(
    generation_config: GenerationConfig, tokenizer: PreTrainedTokenizerBase, image_token_id: int
) -> None:
    """Qwen's stop tokens (where the language model's own config names none) and no `<image>` in the output."""
    if generation_config.eos_token_id is None:
        stops = [tokenizer.convert_tokens_to_ids(token) for token in QWEN_STOP_TOKENS if token in tokenizer.get_vocab()]
        generation_config.eos_token_id = stops
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    # A placeholder is input only: never let generation emit one.
    generation_config.suppress_tokens = [image_token_id]


def smoke_test(model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor) -> None:
    """Generates two tokens about a drawn image: the parts fit together before anything is written."""
    size = model.config.vision_config.image_size
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill="red")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=prompt, return_tensors="pt").to(model.dtype)
    model.generate(**inputs, max_new_tokens=2, do_sample=False)


def build_checkpoint(
    vision: str,
    text: str,
    output: str | Path,
    projector: str | Path | None = None,
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int | list[int] = -2,
    vision_feature_select_strategy: str = "default",
    dtype: str = "float32",
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Builds the checkpoint in `output` and returns its path; see the module docstring."""
    output = Path(output)
    check_output_folder(output)
    torch_dtype = check_dtype(dtype)
    vision_config = load_source_config(vision, "--vision")
    text_config = load_source_config(text, "--text")
    if vision_config.model_type not in TOWER_CLASSES:
        raise ValueError(f"--vision {vision!r} is a {vision_config.model_type!r} model; expected CLIP or SigLIP.")
    if text_config.model_type != "qwen3":
        raise ValueError(f"--text {text!r} is a {text_config.model_type!r} model; expected a Qwen3 causal LM.")

    tower = TOWER_CLASSES[vision_config.model_type].from_pretrained(vision)
    language_model = Qwen3ForCausalLM.from_pretrained(text)
    tokenizer = AutoTokenizer.from_pretrained(text, padding_side="left")
    image_processor = AutoImageProcessor.from_pretrained(vision, **PIL_IMAGE_PROCESSOR)
    image_token_id = add_placeholder_token(tokenizer, language_model, IMAGE_TOKEN)

    config = LlavaQwen3Config(
        vision_config=tower.config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_id=image_token_id,
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
    )
    model = LlavaQwen3ForConditionalGeneration(config).eval()
    if projector is not None:
        weights = read_projector(Path(projector))
        expected = {name: tuple(p.shape) for name, p in model.model.multi_modal_projector.state_dict().items()}
        given = {name: tuple(t.shape) for name, t in weights.items()}
        if given != expected:
            raise ValueError(f"--projector {projector} holds {given}; this tower and language model need {expected}.")
        model.model.multi_modal_projector.load_state_dict(weights)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())

    model.generation_config.update(**language_model.generation_config.to_diff_dict())
    finish_generation_config(model.generation_config, tokenizer, image_token_id)
    processor = LlavaQwen3Processor(image_processor, tokenizer, image_seq_length=config.image_seq_length)
    cast(model, torch_dtype)
    smoke_test(model, processor)
    return write_checkpoint(model, processor, output, max_shard_size)


def main(argv: list[str] | None = None) -> None:
    """Command line of build_checkpoint."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vision", required=True, help="CLIP/SigLIP checkpoint (vision-only or full), folder or id")
    parser.add_argument("--text", required=True, help="Qwen3 causal LM checkpoint, folder or id")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--projector", type=Path, help="projector weights: safetensors or LLaVA mm_projector.bin")
    parser.add_argument("--projector-type", default=PROJECTOR_TYPES[0], choices=PROJECTOR_TYPES)
    parser.add_argument("--vision-feature-layer", type=int, nargs="+", default=[-2])
    parser.add_argument(
        "--vision-feature-select-strategy",
        default=VISION_FEATURE_SELECT_STRATEGIES[0],
        choices=VISION_FEATURE_SELECT_STRATEGIES,
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE)
    args = parser.parse_args(argv)
    layers = args.vision_feature_layer
    with exit_on_error(parser):
        folder = build_checkpoint(
            args.vision,
            args.text,
            args.output,
            projector=args.projector,
            projector_type=args.projector_type,
            vision_feature_layer=layers[0] if len(layers) == 1 else layers,
            vision_feature_select_strategy=args.vision_feature_select_strategy,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
        )
    print_folder(folder)


if __name__ == "__main__":
    main()
