"""Time-to-first-token and decode speed of PyTorch fp32, ONNX fp32, ONNX INT8 and ONNX q4, in one run.

The model has the real sizes of Qwen3-0.6B with a CLIP ViT-B/32 tower (random weights: nothing is downloaded). Each
engine generates the same number of tokens from the same prompt (one 224x224 picture and a question); a streamer
stamps the time of every token. The memory-bandwidth floor is the time to read each engine's decoder weights once
per token at the copy bandwidth measured in this process; no decoder can beat it on this machine.

With `--llama-cpp BIN_DIR` (the folder of llama.cpp's executables that scripts/build_llama_cpp.sh prints), the same
model is also exported with `llava-qwen3-export-gguf` at f32, q8_0 and Q4_K_M and timed in llama-server with the same
picture and prompt (`llama_cpp_yardstick.py`), each beside the ONNX variant it rivals.

    python benchmarks/onnx_generation.py [--new-tokens 48] [--repeats 3] [--workdir DIR] [--llama-cpp BIN_DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoConfig

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.build import finish_generation_config
from llava_qwen3.conversion.export_onnx import export_onnx
from llava_qwen3.conversion.tiny import image_processor_for, train_tokenizer
from llava_qwen3.inference.onnx_layout import external_data_path, graph_path
from llava_qwen3.inference.onnx_runner import LlavaQwen3OnnxModel
from llava_qwen3.processing import IMAGE_TOKEN

from full_size import CLIP_VIT_B_32, QWEN3_0_6B, TokenClock, copy_bandwidth
from llama_cpp_yardstick import GGUF_TYPES, check_tools, export_variants, timings

ONNX_ENGINES = {"ONNX fp32": "fp32", "ONNX INT8": "quantized", "ONNX q4": "q4"}  # the name of each variant's row


def full_size_model() -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    tokenizer = train_tokenizer()
    config = LlavaQwen3Config(
        vision_config=AutoConfig.for_model(**CLIP_VIT_B_32),
        text_config=AutoConfig.for_model(**QWEN3_0_6B),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(0)
    model = LlavaQwen3ForConditionalGeneration(config).eval()
    finish_generation_config(model.generation_config, tokenizer, config.image_token_id)
    processor = LlavaQwen3Processor(image_processor_for(config), tokenizer, image_seq_length=config.image_seq_length)
    return model, processor


def prompt_picture_and_text(processor: LlavaQwen3Processor) -> tuple[Image.Image, str]:
    """The benchmark's picture (at the tower's size: every engine then sees the same pixels) and chat prompt."""
    image = Image.new("RGB", (224, 224), "navy")
    ImageDraw.Draw(image).ellipse((40, 40, 180, 180), fill="orange")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}]
    return image, processor.apply_chat_template(messages, add_generation_prompt=True)


def prompt_inputs(processor: LlavaQwen3Processor, return_tensors: str) -> dict:
    image, text = prompt_picture_and_text(processor)
    return dict(processor(images=[image], text=text, return_tensors=return_tensors))


def timed(generate, repeats: int) -> tuple[float, float, np.ndarray]:
    """Median time to first token (s) and median decode rate (tokens/s) over `repeats` runs after a warm-up."""
    first, rates, tokens = [], [], None
    for run in range(repeats + 1):
        clock = TokenClock()
        start = time.perf_counter()
        tokens = generate(clock)
        if run == 0:
            continue  # warm-up
        first.append(clock.stamps[1] - start)
        rates.append((len(clock.stamps) - 2) / (clock.stamps[-1] - clock.stamps[1]))
    return statistics.median(first), statistics.median(rates), np.asarray(tokens)


def decoder_bytes(folder: Path, variant: str) -> int:
    path = graph_path(folder, "decoder_model_merged", variant)
    data = external_data_path(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the export goes (default: a temporary folder)")
    parser.add_argument("--llama-cpp", type=Path, help="folder of llama.cpp's executables, to compare with")
    args = parser.parse_args()
    if args.llama_cpp:
        check_tools(args.llama_cpp)  # before the long runs, not after them
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    model, processor = full_size_model()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    folder = workdir / "export"
    if not folder.exists():
        start = time.perf_counter()
        export_onnx(model, folder, processor=processor, quantize=("quantized", "q4"))
        print(f"export with quantised variants: {time.perf_counter() - start:.0f} s")

    inputs = prompt_inputs(processor, "pt")
    np_inputs = prompt_inputs(processor, "np")
    n = args.new_tokens
    prompt_tokens = inputs["input_ids"].shape[1]
    print(f"prompt: {prompt_tokens} tokens with 1 image; {n} new tokens; {threads} threads")

    def torch_generate(clock: TokenClock) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock)

    results = {"PyTorch fp32": timed(torch_generate, args.repeats)}
    weights = {"PyTorch fp32": decoder_bytes(folder, "fp32")}
    for name, variant in ONNX_ENGINES.items():
        runner = LlavaQwen3OnnxModel(folder, variant=variant)

        def onnx_generate(clock: TokenClock, runner: LlavaQwen3OnnxModel = runner) -> np.ndarray:
            return runner.generate(**np_inputs, max_new_tokens=n, eos_token_id=[], streamer=clock)

        results[name] = timed(onnx_generate, args.repeats)
        weights[name] = decoder_bytes(folder, variant)
        del runner
    bandwidth = copy_bandwidth()

    reference_tokens = results["PyTorch fp32"][2]
    base_rate = results["PyTorch fp32"][1]
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s\n")
    print(
        "| engine | decoder weights | time to first token | decode | vs PyTorch fp32 | bandwidth floor | "
        "of floor | tokens equal to PyTorch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (first, rate, tokens) in results.items():
        floor = bandwidth / weights[name]
        same = int((tokens[0, -n:] == reference_tokens[0, -n:]).cumprod().sum())
        print(
            f"| {name} | {weights[name] / 1e9:.2f} GB | {first * 1000:.0f} ms | {rate:.1f} tok/s | "
            f"{rate / base_rate:.2f}x | {floor:.1f} tok/s | {rate / floor:.0%} | first {same}/{n} |"
        )
    if args.llama_cpp:
        image, prompt = prompt_picture_and_text(processor)
        gguf = export_variants(model, processor, workdir, args.llama_cpp)
        llama = timings(gguf, args.llama_cpp, prompt, image, n, args.repeats, threads)
        print(
            "\n| ONNX variant | time to first token | decode | llama.cpp | language model file | time to first token | "
            "decode | tokens equal to PyTorch | ONNX / llama.cpp decode rate | llama.cpp / ONNX time to first token |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, variant in ONNX_ENGINES.items():
            first, rate, _ = results[name]
            measured = llama[variant]
            same = int((np.asarray(measured.tokens) == reference_tokens[0, -n:]).cumprod().sum())
            print(
                f"| {name} | {first * 1000:.0f} ms | {rate:.1f} tok/s | {GGUF_TYPES[variant]} | "
                f"{measured.language_model_bytes / 1e9:.2f} GB | {measured.ttft_s * 1000:.0f} ms | "
                f"{measured.decode_tok_s:.1f} tok/s | first {same}/{n} | {rate / measured.decode_tok_s:.2f}x | "
                f"{measured.ttft_s / first:.2f}x |"
            )


if __name__ == "__main__":
    main()
