"""Building a checkpoint from pretrained parts saved locally: CLIP (full or vision-only) or SigLIP + Qwen3."""

from __future__ import annotations

import pytest
import torch
from helpers import TRANSFORMERS_MAJOR, draw_image, run_fresh_python, write_tiny_parts
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3ForCausalLM,
)

from llava_qwen3.conversion.build import build_checkpoint, main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_tiny_parts(tmp_path_factory.mktemp("parts"))


@pytest.mark.parametrize("vision", ["clip", "siglip"])
def test_build_loads_in_a_fresh_process_and_keeps_text_logits(parts, tmp_path, vision):
    output = build_checkpoint(str(parts / vision), str(parts / "qwen3"), tmp_path / "built")
    run_fresh_python(
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from PIL import Image
        model = AutoModelForImageTextToText.from_pretrained("built", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("built", trust_remote_code=True)
        inputs = processor(images=[Image.new("RGB", (40, 40), "red")], text="<image> what?", return_tensors="pt")
        print(model.generate(**inputs, max_new_tokens=3, do_sample=False).shape)
        """,
        cwd=tmp_path,
    )
    from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor

    built = LlavaQwen3ForConditionalGeneration.from_pretrained(output).eval()
    processor = LlavaQwen3Processor.from_pretrained(output)
    original = Qwen3ForCausalLM.from_pretrained(parts / "qwen3").eval()
    text = processor(text="What colour is the circle?", return_tensors="pt")
    image_id = built.config.image_token_id
    other_tokens = torch.arange(built.config.text_config.vocab_size) != image_id
    with torch.no_grad():
        built_logits, original_logits = built(**text).logits, original(**text).logits
    # Every token but the new <image> row scores exactly as before.
    assert torch.allclose(built_logits[..., other_tokens], original_logits[..., other_tokens], atol=1e-6)
    embeddings = built.get_input_embeddings().weight
    assert torch.allclose(embeddings[image_id], embeddings[:image_id].mean(0), atol=1e-6)
    assert built.generation_config.suppress_tokens == [image_id]
    stops = processor.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert built.generation_config.eos_token_id == stops
    inputs = processor(images=[draw_image(1)], text="<image> what?", return_tensors="pt")
    assert built.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2


def test_build_loads_a_llava_projector_and_saves_the_dtype(parts, tmp_path):
    projector = {
        "model.mm_projector.0.weight": torch.randn(64, 32),
        "model.mm_projector.0.bias": torch.randn(64),
        "model.mm_projector.2.weight": torch.randn(64, 64),
        "model.mm_projector.2.bias": torch.randn(64),
    }
    torch.save(projector, tmp_path / "mm_projector.bin")
    output = build_checkpoint(
        str(parts / "clip"),
        str(parts / "qwen3"),
        tmp_path / "built",
        projector=tmp_path / "mm_projector.bin",
        dtype="bfloat16",
    )
    from llava_qwen3 import LlavaQwen3ForConditionalGeneration

    dtype_option = "dtype" if TRANSFORMERS_MAJOR >= 5 else "torch_dtype"  # renamed in transformers 5
    built = LlavaQwen3ForConditionalGeneration.from_pretrained(output, **{dtype_option: "auto"})
    assert built.dtype == torch.bfloat16
    assert torch.equal(
        built.model.multi_modal_projector.linear_2.weight, projector["model.mm_projector.2.weight"].bfloat16()
    )


def test_build_shards_weights_above_the_size_limit(parts, tmp_path):
    output = build_checkpoint(str(parts / "siglip"), str(parts / "qwen3"), tmp_path / "built", max_shard_size="200KB")
    shards = sorted(path.name for path in output.glob("*.safetensors"))
    assert len(shards) > 1 and (output / "model.safetensors.index.json").is_file()
    from llava_qwen3 import LlavaQwen3ForConditionalGeneration
    from llava_qwen3.hub import checkpoint_files

    assert {"model.safetensors.index.json", *shards} <= {path.name for path in checkpoint_files(output)}
    built = LlavaQwen3ForConditionalGeneration.from_pretrained(output)
    original = Qwen3ForCausalLM.from_pretrained(parts / "qwen3")
    assert torch.equal(built.model.language_model.norm.weight, original.model.norm.weight)


def test_bad_inputs_stop_before_anything_is_written(parts, tmp_path, capsys):
    LlamaForCausalLM(
        LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=99)
    ).save_pretrained(tmp_path / "llama")
    save_file(
        {
            "linear_1.weight": torch.zeros(64, 16),
            "linear_1.bias": torch.zeros(64),
            "linear_2.weight": torch.zeros(64, 64),
            "linear_2.bias": torch.zeros(64),
        },
        tmp_path / "bad.safetensors",
    )
    cases = {
        "expected a Qwen3 causal LM": ["--vision", str(parts / "clip"), "--text", str(tmp_path / "llama")],
        "this tower and language model need": [
            "--vision",
            str(parts / "clip"),
            "--text",
            str(parts / "qwen3"),
            "--projector",
            str(tmp_path / "bad.safetensors"),
        ],
        "is not a checkpoint folder": ["--vision", str(tmp_path / "missing"), "--text", str(parts / "qwen3")],
    }
    for message, arguments in cases.items():
        with pytest.raises(SystemExit) as stop:
            main([*arguments, "--output", str(tmp_path / "out")])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
        assert not any(path.name.startswith(".out-") for path in tmp_path.iterdir())
