"""Generation throughput of vLLM (through the plugin) against the package's PyTorch `generate`, at 1 and 16
concurrent prompts, in one run.

The checkpoint is tiny but not trivial and is built on the spot with random weights: a Qwen3 with 4 layers and hidden
size 256, and a CLIP ViT-B/32-shaped tower (224 px, 49 image tokens) cut to 2 layers. Each of the 16 prompts holds
its own picture and a question, and every engine generates exactly `--new-tokens` tokens per prompt, greedily, in
float32. "1 concurrent" runs the prompts one after another; "16 concurrent" hands all 16 over at once: one
left-padded batch to `generate`, one `LLM.generate` call to vLLM (continuous batching). Times include turning images
and text into inputs; each round times PyTorch and then vLLM, and the medians over rounds are compared, so that a
change in a shared machine's load reaches both alike. Run it in the environment scripts/test_vllm.sh builds:

    .venv-vllm/bin/python benchmarks/vllm_throughput.py [--new-tokens 32] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from vllm import LLM, SamplingParams

from llava_qwen3.conversion import build_tiny_checkpoint

TEXT_CONFIG = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
}
CLIP_B_32_TWO_LAYERS = {
    "image_size": 224,
    "patch_size": 32,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 2,
}
NUM_PROMPTS = 16
QUESTIONS = ["What is in this picture?", "Which colour is the circle?", "How many shapes are there?", "Describe it."]


def picture(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    background, shape = (tuple(torch.randint(0, 256, (3,), generator=generator).tolist()) for _ in range(2))
    image = Image.new("RGB", (320, 240), background)
    ImageDraw.Draw(image).ellipse((40 + seed, 30, 200, 190 - seed), fill=shape)
    return image


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run over `repeats` rounds after one warm-up round; a round runs each once, in turn, so
    that a change in the machine's load between rounds reaches every engine alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_index:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def in_chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the checkpoint goes (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    folder = (args.workdir or Path(tempfile.mkdtemp(prefix="vllm-bench-"))) / "checkpoint"
    model, processor = build_tiny_checkpoint(folder, vision_overrides=CLIP_B_32_TWO_LAYERS, text_overrides=TEXT_CONFIG)
    n = args.new_tokens
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]}],
            add_generation_prompt=True,
        )
        for i in range(NUM_PROMPTS)
    ]
    images = [picture(i) for i in range(NUM_PROMPTS)]
    prompt_tokens = len(processor(text=texts[0], images=[images[0]])["input_ids"][0])
    print(
        f"model: Qwen3 4x256 + CLIP B/32 tower at 2 layers, float32; {NUM_PROMPTS} prompts of about {prompt_tokens} "
        f"tokens (1 image each), {n} new tokens each; {os.cpu_count()} CPU cores"
    )

    pytorch_tokens: list[list[int]] = []

    def pytorch_run(concurrency: int) -> None:
        pytorch_tokens.clear()
        for chunk in in_chunks(list(range(NUM_PROMPTS)), concurrency):
            inputs = processor(text=[texts[i] for i in chunk], images=[[images[i]] for i in chunk], return_tensors="pt")
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            pytorch_tokens.extend(output[:, inputs["input_ids"].shape[1] :].tolist())

    llm = LLM(model=str(folder), dtype="float32", enforce_eager=True, max_model_len=1024, trust_remote_code=True)
    params = SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n)
    requests = [
        {"prompt": text, "multi_modal_data": {"image": image}} for text, image in zip(texts, images, strict=True)
    ]
    vllm_tokens: list[list[int]] = []

    def vllm_run(concurrency: int) -> None:
        vllm_tokens.clear()
        for chunk in in_chunks(requests, concurrency):
            outputs = llm.generate(chunk, params, use_tqdm=False)
            vllm_tokens.extend(list(output.outputs[0].token_ids) for output in outputs)

    seconds = {}
    for concurrency in (1, NUM_PROMPTS):
        runs = {"PyTorch": partial(pytorch_run, concurrency), "vLLM": partial(vllm_run, concurrency)}
        for engine, median in interleaved(runs, args.repeats).items():
            seconds[engine, concurrency] = median
    same = sum(ours == theirs for ours, theirs in zip(vllm_tokens, pytorch_tokens, strict=True))

    print(f"PyTorch generate: {torch.get_num_threads()} threads; vLLM: its CPU defaults (worker pinned to one core)\n")
    print("| concurrent prompts | PyTorch `generate` | vLLM | vLLM / PyTorch |")
    print("| --- | --- | --- | --- |")
    for concurrency in (1, NUM_PROMPTS):
        rates = {engine: NUM_PROMPTS * n / seconds[engine, concurrency] for engine in ("PyTorch", "vLLM")}
        print(
            f"| {concurrency} | {rates['PyTorch']:.0f} tok/s | {rates['vLLM']:.0f} tok/s | "
            f"{rates['vLLM'] / rates['PyTorch']:.2f}x |"
        )
    print(f"\ngreedy tokens equal to PyTorch's (16 concurrent): {same}/{NUM_PROMPTS} prompts")


if __name__ == "__main__":
    main()
