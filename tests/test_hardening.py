"""Bad and unusual input, as a new user gives it: each case ends in a clear error at the boundary where it enters, or
in the right result, and nothing already done is lost."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import draw_image, user_prompt
from PIL import Image

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion import tiny_config
from llava_qwen3.conversion.fused_decoder import builder_unavailable
from llava_qwen3.conversion.writing import missing_checkpoint_files, staged_folder, write_checkpoint
from llava_qwen3.training import ChatCollator, from_llava_record
from llava_qwen3.training.cli import run_training
from llava_qwen3.training.config import load_config
from llava_qwen3.training.data import BadRecordError, RecordDataset


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares `width` x `height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


# Training that would learn nothing


def test_a_template_without_generation_marks_is_refused_by_the_collator(tiny_clip):
    _, _, processor = tiny_clip
    llava_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    other = LlavaQwen3Processor(
        processor.image_processor, processor.tokenizer, chat_template=llava_template, image_seq_length=16
    )
    with pytest.raises(ValueError, match=r"does not mark the assistant's replies with \{% generation %\}"):
        ChatCollator(other)


def test_a_batch_with_no_labelled_token_is_an_error(tiny_clip):
    _, _, processor = tiny_clip
    record = {"conversations": [{"from": "human", "value": "a long question " * 10}, {"from": "gpt", "value": "Yes."}]}
    with pytest.raises(ValueError, match="no token of this batch is an assistant reply"):
        ChatCollator(processor, max_length=12)([from_llava_record(record)])


def test_records_truncation_would_spoil_are_caught_at_load(tiny_clip, tmp_path):
    folder, _, _ = tiny_clip
    draw_image(1).save(tmp_path / "a.png")
    question = {"from": "human", "value": "<image>\nWhat is it?"}
    answer = {"from": "gpt", "value": "A shape."}
    records = [
        {"id": "good", "image": "a.png", "conversations": [question, answer]},
        {
            "id": "reply-cut",
            "image": "a.png",
            "conversations": [{**question, "value": "<image>\n" + "x " * 40}, answer],
        },
        {
            "id": "placeholder-cut",
            "image": "a.png",
            "conversations": [{**question, "value": "y " * 30 + "<image>"}, answer],
        },
    ]
    (tmp_path / "data.json").write_text(json.dumps(records))
    processor = LlavaQwen3Processor.from_pretrained(folder)
    collator = ChatCollator(processor, max_length=40)
    dataset = RecordDataset(tmp_path / "data.json", check_example=collator.check_example)
    assert len(dataset) == 1
    skipped = "\n".join(dataset.skipped)
    assert "record reply-cut: truncation to max_length=40 leaves no token of an assistant reply" in skipped
    cut = "record placeholder-cut: After tokenization the input holds 0 <image> tokens, expected 16: truncation cut"
    assert cut in skipped
    batch = collator([dataset[0]])
    assert (batch["labels"] != -100).sum() > 0


# An earlier run is never overwritten silently


def test_training_refuses_an_output_dir_holding_a_run(tiny_clip, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"the earlier run")
    config = load_config("debug", overrides=[f"model={tiny_clip[0]}", "data=unused.json", f"output_dir={output}"])
    with pytest.raises(ValueError, match="already holds a run; continue it with --resume, replace it with"):
        run_training(config)
    assert (output / "model.safetensors").read_bytes() == b"the earlier run"


# Floats already in [0, 1] and 16-bit pictures give the uint8 result


def test_float_and_16_bit_images_give_the_uint8_result(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    image = draw_image(7)
    array = np.asarray(image)
    expected = processor(images=image, text="<image>", return_tensors="pt")["pixel_values"]
    variants = {
        "numpy float [0, 1]": array.astype(np.float32) / 255,
        "tensor float [0, 1] CHW (ToTensor)": torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255,
        "numpy float [0, 255]": array.astype(np.float32),
    }
    for name, value in variants.items():
        pixels = processor(images=value, text="<image>", return_tensors="pt")["pixel_values"]
        assert torch.allclose(pixels, expected, atol=1e-5), name
    grey = np.asarray(image.convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # a 16-bit greyscale PNG
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    sixteen = processor(images=tmp_path / "sixteen.png", text="<image>", return_tensors="pt")["pixel_values"]
    eight = processor(images=Image.fromarray(grey), text="<image>", return_tensors="pt")["pixel_values"]
    assert torch.allclose(sixteen, eight, atol=1e-5)
    two_d = processor(images=grey, text="<image>", return_tensors="pt")["pixel_values"]  # (H, W) is greyscale
    assert torch.allclose(two_d, eight, atol=1e-5)


# Bad records are caught at load, by id or line


def test_bad_records_are_caught_at_load_by_id_or_line(tiny_clip, tmp_path):
    image = draw_image(2)
    image.save(tmp_path / "ok.png")
    (tmp_path / "cut.jpg").write_bytes(_encoded(image.resize((256, 256)), "JPEG")[:-600])
    (tmp_path / "bomb.png").write_bytes(_png_declaring(30000, 30000))
    turn = {"from": "human", "value": "<image>\nWhat?"}
    answer = {"from": "gpt", "value": "A shape."}
    lines = [
        json.dumps({"id": "good", "image": "ok.png", "conversations": [turn, answer]}),
        json.dumps({"id": "no-placeholder", "image": "ok.png", "conversations": [{**turn, "value": "What?"}, answer]}),
        json.dumps({"id": "no-image", "conversations": [turn, answer]}),
        json.dumps(
            {
                "id": "two-placeholders",
                "image": "ok.png",
                "conversations": [{**turn, "value": "<image><image>"}, answer],
            }
        ),
        "",
        '{"id": "broken", "image": ',
        json.dumps({"id": "truncated-jpeg", "image": "cut.jpg", "conversations": [turn, answer]}),
        json.dumps({"id": "bomb", "image": "bomb.png", "conversations": [turn, answer]}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    processor = tiny_clip[2]
    dataset = RecordDataset(tmp_path / "data.jsonl", check_example=ChatCollator(processor).check_example)
    assert len(dataset) == 1 and dataset[0]["images"][0].size == (48, 40)
    skipped = "\n".join(dataset.skipped)
    assert "record no-placeholder: The text holds 0 <image> placeholders but 1 images were given" in skipped
    assert "record no-image: The text holds 1 <image> placeholders but 0 images were given" in skipped
    assert "record two-placeholders: The text holds 2 <image> placeholders but 1 images were given" in skipped
    assert "line 6: not a JSON value" in skipped
    assert "record truncated-jpeg: image" in skipped and "cannot be decoded" in skipped
    assert "record bomb: image" in skipped and "declares more pixels than" in skipped
    with pytest.raises(BadRecordError, match="record no-placeholder"):
        RecordDataset(
            tmp_path / "data.jsonl", on_bad_record="error", check_example=ChatCollator(processor).check_example
        )


# A checkpoint folder without its tokenizer


def test_a_checkpoint_folder_without_tokenizer_json_is_refused(tiny_clip, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_clip[0], folder)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="holds no tokenizer: it needs tokenizer.json"):
        LlavaQwen3Processor.from_pretrained(folder)


# Half-written folders


def test_sigterm_during_a_staged_write_leaves_nothing(tmp_path):
    output = tmp_path / "checkpoint"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from llava_qwen3.conversion.writing import staged_folder
        with staged_folder(Path({str(output)!r})) as staging:
            (staging / "model.safetensors").write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [], "neither the output nor its staging folder may remain"


def test_a_staging_folder_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    output = tmp_path / "checkpoint"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".checkpoint.staging-{int(dead.stdout)}-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".checkpoint.staging-{os.getpid()}-efgh"  # another write in progress in this process
    alive.mkdir()
    with staged_folder(output) as staging:
        (staging / "config.json").write_text("{}")
    assert not stale.exists() and alive.exists() and (output / "config.json").is_file()


def test_checkpoint_folders_are_written_with_the_umask_not_0700(tiny_clip, tmp_path):
    _, model, processor = tiny_clip
    old = os.umask(0o022)
    try:
        write_checkpoint(model, processor, tmp_path / "shared")
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755


def test_the_demo_retrains_over_an_incomplete_checkpoint(tiny_clip, tmp_path, monkeypatch, capsys):
    from llava_qwen3 import demo
    from llava_qwen3.training import shapes_recipe

    folder = tmp_path / "demo-checkpoint"
    shutil.copytree(tiny_clip[0], folder)
    (folder / "model.safetensors").unlink()  # what an interrupted save of an older version left
    assert missing_checkpoint_files(folder) == ["model.safetensors"]
    trained = []
    monkeypatch.setattr(shapes_recipe, "train_on_shapes", lambda output: trained.append(output))
    demo.ensure_demo_checkpoint(folder)
    assert trained == [folder] and not folder.exists()
    assert "is incomplete (no model.safetensors): training it again" in capsys.readouterr().out
    shutil.copytree(tiny_clip[0], folder)
    demo.ensure_demo_checkpoint(folder)  # complete: kept
    assert trained == [folder] and missing_checkpoint_files(folder) == []


# Remote images: bounded, and only on the host asked for


class _ImageServer(BaseHTTPRequestHandler):
    png = _encoded(draw_image(3), "PNG")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/image.png":
            self._send(self.png)
        elif self.path == "/big.png":
            self._send(self.png + b"\0" * 5000)
        elif self.path == "/same-host":
            self._redirect(f"http://127.0.0.1:{self.server.server_port}/image.png")
        elif self.path == "/other-host":
            self._redirect(f"http://localhost:{self.server.server_port}/image.png")
        elif self.path == "/silent":
            time.sleep(5)
            self._send(self.png)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_remote_images_are_fetched_within_bounds_and_can_be_turned_off(tiny_clip, image_server, monkeypatch):
    _, _, processor = tiny_clip
    monkeypatch.setattr(processor, "remote_image_timeout", 1.0)
    monkeypatch.setattr(processor, "remote_image_max_bytes", len(_ImageServer.png) + 100)
    expected = processor(images=draw_image(3), text="<image>", return_tensors="pt")["pixel_values"]
    fetched = processor(images=f"{image_server}/image.png", text="<image>", return_tensors="pt")["pixel_values"]
    assert torch.equal(fetched, expected)
    assert torch.equal(
        processor(images=f"{image_server}/same-host", text="<image>", return_tensors="pt")["pixel_values"], expected
    )
    for path, message in [
        ("/other-host", "redirect to another host"),
        ("/big.png", "holds more than"),
        ("/silent", "could not be fetched: .*timed out"),
    ]:
        started = time.monotonic()
        with pytest.raises(ValueError, match=message):
            processor(images=f"{image_server}{path}", text="<image>")
        assert time.monotonic() - started < 4
    monkeypatch.setattr(processor, "remote_images", False)
    with pytest.raises(ValueError, match="refused: this processor does not fetch remote images"):
        processor(images=f"{image_server}/image.png", text="<image>")


# Clear errors instead of deep stack traces


@pytest.mark.parametrize(
    "text, images, message",
    [
        ("", None, r"text holds an empty prompt \(index 0\)"),
        ([], None, "text is an empty list"),
        (["hi", ""], None, r"empty prompt \(index 1\)"),
        ("<image>", np.full((8, 8, 3), np.nan, np.float32), "NaN or infinite"),
        ("<image>", np.full((8, 8, 3), -0.5, np.float32), r"values in \[-0.5, -0.5\]; expected \[0, 1\] or \[0, 255\]"),
        ("<image>", np.zeros((2, 8, 8, 8), np.uint8)[0, 0], None),  # (8, 8): a greyscale picture, accepted
        ("<image>", np.zeros((5, 8, 8), np.uint8), r"shape \(5, 8, 8\); expected \(H, W\), \(H, W, C\) or \(C, H, W\)"),
        ("<image>", 3.5, "an image must be a PIL image, a numpy array"),
    ],
)
def test_bad_processor_inputs_get_clear_errors(tiny_clip, text, images, message):
    _, _, processor = tiny_clip
    if message is None:
        assert processor(images=images, text=text, return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)
        return
    with pytest.raises((ValueError, TypeError), match=message):
        processor(images=images, text=text)


def test_truncated_image_files_are_named_in_the_error(tiny_clip, tmp_path):
    _, _, processor = tiny_clip
    picture = draw_image(4).resize((200, 200))
    for kind, suffix in (("PNG", "png"), ("JPEG", "jpg")):
        path = tmp_path / f"cut.{suffix}"
        data = _encoded(picture, kind)
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=rf"image file '{path}' cannot be decoded"):
            processor(images=str(path), text="<image>")
    (tmp_path / "bomb.png").write_bytes(_png_declaring(30000, 30000))
    with pytest.raises(ValueError, match="declares more pixels than the 89,478,485 accepted"):
        processor(images=tmp_path / "bomb.png", text="<image>")


def test_a_resize_past_the_pixel_limit_is_refused_before_it_allocates(tiny_clip):
    _, _, processor = tiny_clip
    for size in (100_000, {"shortest_edge": 2**20}, {"height": 5, "width": 2**40}):
        with pytest.raises(ValueError, match="size=.* asks for images of more than max_image_pixels"):
            processor(images=draw_image(1), text="<image>", size=size)
    with pytest.raises(ValueError, match="crop_size=.* asks for images of more than max_image_pixels"):
        processor(images=draw_image(1), text="<image>", crop_size={"height": 10**5, "width": 10**5})


def test_bad_model_inputs_and_configs_get_clear_errors(tiny_clip):
    _, model, processor = tiny_clip
    inputs = processor(images=draw_image(1), text=user_prompt(processor, "Hi", 1), return_tensors="pt")
    with pytest.raises(TypeError, match="pixel_values must be a floating-point torch.Tensor, got a ndarray"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].numpy())
    with pytest.raises(ValueError, match=r"image_token_id is 999, outside the language model's vocabulary \[0, 300\)"):
        tiny_config(vocab_size=300, image_token_id=999)
    with pytest.raises(ValueError, match="config.image_token_id is not set"):
        LlavaQwen3ForConditionalGeneration(LlavaQwen3Config(text_config={"vocab_size": 300}))


def test_a_prompt_past_the_context_warns(tiny_clip):
    from transformers.testing_utils import CaptureLogger

    from llava_qwen3.modeling import modeling_llava_qwen3

    _, model, processor = tiny_clip
    long = processor(text="shape " * 520, return_tensors="pt")
    assert long["input_ids"].shape[1] > model.config.text_config.max_position_embeddings
    logger = CaptureLogger(modeling_llava_qwen3.logger)
    with logger, torch.no_grad():
        model(**long)
    assert "more than the model's context of 512 (max_position_embeddings)" in logger.out


@pytest.mark.parametrize(
    "command, arguments, message",
    [
        (
            "llava-qwen3-export-onnx",
            ["{missing}", "--output", "{out}"],
            "checkpoint '{missing}' is not a checkpoint folder",
        ),
        (
            "llava-qwen3-add-modality",
            ["{missing}", "--output", "{out}", "--name", "m1", "--input-dim", "4"],
            "checkpoint '{missing}' is not a checkpoint folder",
        ),
        (
            "llava-qwen3-export-onnx",
            ["{qwen3}", "--output", "{out}"],
            "is a 'qwen3' model; expected a 'llava_qwen3' checkpoint",
        ),
        ("llava-qwen3-export-onnx", ["{tiny}", "--output", "/sys/llava-qwen3-out"], "cannot be created"),
        ("llava-qwen3-export-onnx", ["{tiny}", "--output", "{out}", "--quantize", "none", "q4"], "cannot be combined"),
    ],
)
def test_commands_refuse_bad_input_in_one_line(tiny_clip, tmp_path, command, arguments, message):
    qwen3 = tmp_path / "qwen3"
    qwen3.mkdir()
    (qwen3 / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    names = {
        "missing": str(tmp_path / "nowhere"),
        "out": str(tmp_path / "out"),
        "qwen3": str(qwen3),
        "tiny": str(tiny_clip[0]),
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *(argument.format(**names) for argument in arguments)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert message.format(**names) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_with_quantize_none_writes_fp32_graphs_only(tiny_clip, tmp_path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "llava-qwen3-export-onnx"),
            str(tiny_clip[0]),
            "--output",
            str(tmp_path / "out"),
            "--quantize",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    fused = [] if builder_unavailable() else ["decoder_fused.onnx"]  # the fp32 fused decoder, where it can be built
    assert sorted(path.name for path in (tmp_path / "out" / "onnx").glob("*.onnx")) == sorted(
        ["decoder_model_merged.onnx", "embed_tokens.onnx", "vision_encoder.onnx", *fused]
    )


# The model card of a checkpoint with a modality


def test_the_model_card_counts_modality_projectors(tiny_clip, tmp_path):
    from llava_qwen3.conversion.modalities import add_modality
    from llava_qwen3.hub import count_parameters

    folder, _, _ = tiny_clip
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(folder)
    processor = LlavaQwen3Processor.from_pretrained(folder)
    add_modality(model, processor, "m1", input_dim=12)
    write_checkpoint(model, processor, tmp_path / "with-m1")
    counts = count_parameters(tmp_path / "with-m1")
    projectors = model.model.multi_modal_projector, model.model.modality_projectors
    assert counts["projector"] == sum(p.numel() for module in projectors for p in module.parameters())
