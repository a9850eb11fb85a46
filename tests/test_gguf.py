"""GGUF export run in llama.cpp itself: greedy tokens equal the PyTorch model's (f32), agree at q8_0, Q4_K_M loads; the
chat template through llama-server's OpenAI API; the demo model answers as in PyTorch; bad input leaves nothing."""

from __future__ import annotations

import json
import statistics

import gguf
import pytest
import torch
from helpers import draw_image, user_prompt
from openai import OpenAI

from llava_qwen3.conversion import build_tiny_checkpoint
from llava_qwen3.conversion.export_gguf import LLAMA_CPP_CLS_ISSUE, export_gguf, main
from llava_qwen3.conversion.llama_cpp import LlamaServer, image_data, llama_server
from llava_qwen3.modeling import LlavaQwen3Config
from llava_qwen3.processing import IMAGE_TOKEN
from llava_qwen3.training.synthetic import QUESTIONS, draw_scene, random_scenes

NEW_TOKENS = 16
QUESTION = "What is in the picture?"
# Random weights at transformers' default scale (std 0.02) give nearly flat logits: top-two gaps down to 2e-4 over 16
# greedy steps, which llama.cpp's GELUs (read from fp16 tables, about 1e-3 off) can flip. At std 0.2 the smallest gap
# is 0.12, as clear as a trained model's decisions, so equal tokens test the export, not rounding.
SHARP = {"text_overrides": {"initializer_range": 0.2}}


@pytest.fixture(scope="module", params=["clip", "siglip"])
def sharp(request, tmp_path_factory):
    """(folder, model, processor) of a tiny random checkpoint with clear greedy decisions (see SHARP), once with a
    CLIP and once with a SigLIP tower."""
    folder = tmp_path_factory.mktemp(f"sharp-{request.param}")
    model, processor = build_tiny_checkpoint(folder, vision=request.param, **SHARP)
    return folder, model, processor


def torch_tokens(model, processor, image, question: str, new_tokens: int, exactly: bool = True) -> tuple[str, list]:
    """The chat prompt of one picture and question, and the model's greedy answer: exactly `new_tokens` tokens, or
    up to `new_tokens` when not `exactly`."""
    prompt = user_prompt(processor, question, num_images=1)
    inputs = processor(images=[image], text=prompt, return_tensors="pt")
    minimum = new_tokens if exactly else None
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=minimum)
    return prompt, output[0, inputs["input_ids"].shape[1] :].tolist()


def llama_cpp_tokens(server: LlamaServer, prompt: str, image, new_tokens: int, exactly: bool = True) -> list[int]:
    """llama-server's greedy tokens for the same prompt and picture."""
    return server.complete(prompt, [image], IMAGE_TOKEN, new_tokens, ignore_eos=exactly)["tokens"]


def tower_sized_image(model, seed: int = 0):
    """A picture at the tower's input size: llama.cpp's resize (and its padding of non-square pictures) and the
    image processor's then have nothing to do, so both engines see the same pixels."""
    size = model.config.vision_config.image_size
    return draw_image(seed, (size, size))


@pytest.mark.needs("llama.cpp")
@pytest.mark.parametrize("vision_feature_layer", [-2, [-1, -3]], ids=["layer-2", "layers-1-3"])
def test_llama_cpp_greedy_tokens_equal_pytorch_at_f32(sharp, tmp_path, vision_feature_layer):
    folder, model, processor = sharp
    if vision_feature_layer != -2:  # unsorted layers: the export reorders the projector's input columns
        folder = tmp_path / "checkpoint"
        vision = "clip" if model.config.vision_has_cls_token else "siglip"
        model, processor = build_tiny_checkpoint(
            folder, vision=vision, vision_feature_layer=vision_feature_layer, **SHARP
        )
    export = export_gguf(folder, tmp_path / "gguf", "f32")
    image = tower_sized_image(model)
    prompt, expected = torch_tokens(model, processor, image, QUESTION, NEW_TOKENS)
    with llama_server(export.language_model, export.projector) as server:
        assert llama_cpp_tokens(server, prompt, image, NEW_TOKENS) == expected


@pytest.mark.needs("llama.cpp")
def test_llama_server_openai_chat_with_an_image_answers_as_pytorch(sharp, tmp_path):
    """The exported chat template puts llama-server's picture where the processor's puts `<image>\\n`."""
    folder, model, processor = sharp
    export = export_gguf(folder, tmp_path / "gguf", "f32")
    image = tower_sized_image(model, seed=3)
    _, expected = torch_tokens(model, processor, image, QUESTION, NEW_TOKENS)
    with llama_server(export.language_model, export.projector) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        content = [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_data(image)}"}},
            {"type": "text", "text": QUESTION},
        ]
        reply = client.chat.completions.create(
            model="llava-qwen3",
            messages=[{"role": "user", "content": content}],
            max_tokens=NEW_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    assert reply.usage.completion_tokens == NEW_TOKENS
    # A random model's answer may end inside a character's UTF-8 bytes: llama-server holds such a tail back.
    expected_text = processor.decode(expected, skip_special_tokens=True).rstrip("\ufffd")
    assert reply.choices[0].message.content.rstrip("\ufffd") == expected_text


@pytest.mark.needs("llama.cpp")
def test_q8_0_agrees_on_the_first_tokens_and_q4_k_m_loads(tmp_path):
    """q8_0 rounds every weight matrix: on six pictures the first greedy token equals PyTorch fp32's and the median
    run of equal tokens before the first difference is at least 4 of 16 (measured: 16 on transformers 5's random
    weights, 9.5 on 4.57's, whose initialisation differs)."""
    folder = tmp_path / "checkpoint"
    model, processor = build_tiny_checkpoint(folder, vision="clip", **SHARP)
    q8 = export_gguf(folder, tmp_path / "q8_0", "q8_0")
    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(q8.language_model).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    runs = []
    with llama_server(q8.language_model, q8.projector) as server:
        for seed in range(6):
            image = tower_sized_image(model, seed)
            prompt, expected = torch_tokens(model, processor, image, QUESTION, NEW_TOKENS)
            tokens = llama_cpp_tokens(server, prompt, image, NEW_TOKENS)
            pairs = enumerate(zip(tokens, expected, strict=True))
            runs.append(next((index for index, (got, want) in pairs if got != want), NEW_TOKENS))
    print(f"q8_0: greedy tokens equal to PyTorch fp32 before the first difference, six pictures: {runs}")
    assert min(runs) >= 1 and statistics.median(runs) >= 4
    q4 = export_gguf(folder, tmp_path / "q4_k_m", "q4_k_m")
    file_type = gguf.GGUFReader(q4.language_model).fields["general.file_type"].contents()
    assert file_type == gguf.LlamaFileType.MOSTLY_Q4_K_M
    with llama_server(q4.language_model, q4.projector) as server:
        assert len(llama_cpp_tokens(server, prompt, image, NEW_TOKENS)) == NEW_TOKENS


@pytest.mark.slow
@pytest.mark.needs("llama.cpp")
def test_the_demo_model_in_llama_cpp_answers_as_in_pytorch(demo_model, tmp_path):
    """The demo's colour, shape and count questions about freshly drawn pictures (64 px, each engine resizing them its
    own way to the 32-px tower): llama.cpp's answers equal PyTorch's."""
    folder, model, processor = demo_model
    export = export_gguf(folder, tmp_path / "gguf", "f32")
    scenes = random_scenes(6, "train", seed=11)
    answers = {"PyTorch": [], "llama.cpp": []}
    with llama_server(export.language_model, export.projector) as server:
        for scene in scenes:
            image = draw_scene(scene)
            for question in QUESTIONS.values():
                prompt, expected = torch_tokens(model, processor, image, question, 4, exactly=False)
                tokens = llama_cpp_tokens(server, prompt, image, 4, exactly=False)
                answers["PyTorch"].append(processor.decode(expected, skip_special_tokens=True))
                answers["llama.cpp"].append(processor.decode(tokens, skip_special_tokens=True))
    assert answers["llama.cpp"] == answers["PyTorch"]
    truth = [scene.answer(attribute) for scene in scenes for attribute in QUESTIONS]
    right = sum(answer.split()[:1] == [true] for answer, true in zip(answers["llama.cpp"], truth, strict=True))
    print(f"demo model in llama.cpp: {right} of {len(truth)} answers right, all equal to PyTorch's")


def test_the_export_writes_both_files_a_modelfile_and_the_notes(tiny, tmp_path):
    folder, model, _ = tiny
    export = export_gguf(folder, tmp_path / "gguf", "f16")
    reader = gguf.GGUFReader(export.projector)
    assert reader.fields["general.architecture"].contents() == "clip"
    assert reader.fields["clip.projector_type"].contents() == "mlp"
    assert reader.fields["clip.vision.feature_layer"].contents() == [model.config.vision_config.num_hidden_layers - 1]
    text = gguf.GGUFReader(export.language_model)
    assert text.fields["general.architecture"].contents() == "qwen3"
    assert "{% generation" not in text.fields["tokenizer.chat_template"].contents()
    modelfile = export.modelfile.read_text()
    assert f"FROM ./{export.language_model.name}\nFROM ./{export.projector.name}\n" in modelfile
    has_cls = model.config.vision_has_cls_token
    assert any(LLAMA_CPP_CLS_ISSUE in note for note in export.notes) == has_cls


def test_embedding_modalities_are_left_out_with_a_note(tmp_path):
    folder = tmp_path / "checkpoint"
    model, processor = build_tiny_checkpoint(folder, vision="siglip")
    config = json.loads((folder / "config.json").read_text())
    config["modalities"] = {"m1": {"input_dim": 8, "token_id": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    export = export_gguf(folder, tmp_path / "gguf")
    assert any("m1" in note and "images and text only" in note for note in export.notes)
    names = [tensor.name for tensor in gguf.GGUFReader(export.projector).tensors]
    assert names and all(name.startswith(("v.", "mm.")) for name in names)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"projector_type": "mlp_relu_ln"}, "has no llama.cpp form"),
        ({"vision_feature_select_strategy": "full"}, "always drops it"),
    ],
)
def test_what_llama_cpp_cannot_run_is_refused_and_nothing_is_written(tiny_clip, tmp_path, change, message):
    folder = tmp_path / "checkpoint"
    build_tiny_checkpoint(folder, vision="clip", **change)
    LlavaQwen3Config.from_pretrained(folder)  # a valid checkpoint: only its export is refused
    with pytest.raises(ValueError, match=message):
        export_gguf(folder, tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()
    assert not list(tmp_path.glob(".gguf.staging-*"))


def test_bad_input_ends_the_command_with_one_line_and_leaves_nothing(tiny_clip, tmp_path, capsys):
    folder, _, _ = tiny_clip
    without_weights = tmp_path / "without-weights"
    without_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (without_weights / name).write_bytes((folder / name).read_bytes())
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    cases = [
        ([str(without_weights), str(tmp_path / "out1")], "has no model.safetensors"),
        ([str(folder), str(occupied)], "exists and is not an empty folder"),
        ([str(tmp_path / "nowhere"), str(tmp_path / "out2")], "is not a folder"),
        (
            [str(folder), str(tmp_path / "out3"), "--outtype", "q4_k_m", "--llama-cpp", str(tmp_path / "none")],
            "llama-quantize",
        ),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
    assert (occupied / "keep.txt").read_text() == "mine" and [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert not any(path.name.startswith(("out", ".out")) for path in tmp_path.iterdir())
