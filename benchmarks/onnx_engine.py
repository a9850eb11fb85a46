"""One ONNX variant's figures in a process of its own without torch, as an export is deployed (onnxruntime and the
processor; `onnx_runner` needs nothing else), so that its peak resident memory is that of such a process: time to
first token, decode rate, batch 8's decode rate, the greedy tokens, and the peak resident memory after the imports,
after the batch-1 runs and after the batch-8 runs. Also the prompt and timing helpers `onnx_generation.py` shares.

`onnx_generation.py` starts it for each ONNX engine through `full_size.run_without_torch`. Where torch is installed,
transformers imports it (about 0.3 GB resident before any weight), so started as a plain script there it refuses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from llava_qwen3.inference.onnx_runner import LlavaQwen3OnnxModel
from llava_qwen3.processing import LlavaQwen3Processor

from full_size import TokenClock, peak_resident_bytes

BATCH = 8


def prompt_picture_and_text(processor: LlavaQwen3Processor) -> tuple[Image.Image, str]:
    """The benchmark's picture (at the tower's size: every engine then sees the same pixels) and chat prompt."""
    image = Image.new("RGB", (224, 224), "navy")
    ImageDraw.Draw(image).ellipse((40, 40, 180, 180), fill="orange")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}]
    return image, processor.apply_chat_template(messages, add_generation_prompt=True)


def prompt_inputs(processor: LlavaQwen3Processor, return_tensors: str, batch: int = 1) -> dict:
    image, text = prompt_picture_and_text(processor)
    return dict(processor(images=[image] * batch, text=[text] * batch, return_tensors=return_tensors))


def one_run(generate: Callable[[TokenClock], object]) -> tuple[float, float, np.ndarray]:
    """One generation's time to first token (s), decode rate (new tokens/s over all rows) and tokens."""
    clock = TokenClock()
    start = time.perf_counter()
    tokens = np.asarray(generate(clock))
    rate = len(tokens) * (len(clock.stamps) - 2) / (clock.stamps[-1] - clock.stamps[1])
    return clock.stamps[1] - start, rate, tokens


def timed(generate: Callable[[TokenClock], object], repeats: int) -> tuple[float, float, np.ndarray]:
    """Median time to first token (s) and median decode rate over `repeats` runs after a warm-up, and the last run's
    tokens."""
    runs = [one_run(generate) for _ in range(repeats + 1)][1:]  # the first is the warm-up
    return statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs), runs[-1][2]


def onnx_new_tokens(runner: LlavaQwen3OnnxModel, clock: TokenClock, batch: int, new_tokens: int) -> np.ndarray:
    """The runner's greedy answer to `batch` copies of the prompt, every token stamped by `clock`."""
    inputs = prompt_inputs(runner.processor, "np", batch)
    output = runner.generate(**inputs, max_new_tokens=new_tokens, eos_token_id=[], streamer=clock)
    return output[:, inputs["input_ids"].shape[1] :]


def onnx_figures(folder: Path, variant: str, decoder: str, new_tokens: int, repeats: int) -> dict:
    """The runner's figures on `variant`'s graphs with `decoder`, batch 1 then batch 8, and this process's peak
    resident memory after the imports, after batch 1 and after batch 8."""
    imports_bytes = peak_resident_bytes()
    runner = LlavaQwen3OnnxModel(folder, variant=variant, decoder=decoder)
    first, rate, tokens = timed(lambda clock: onnx_new_tokens(runner, clock, 1, new_tokens), repeats)
    batch1_bytes = peak_resident_bytes()
    _, batch_rate, _ = timed(lambda clock: onnx_new_tokens(runner, clock, BATCH, new_tokens), repeats)
    return {
        "ttft_s": first,
        "decode_tok_s": rate,
        "batch_tok_s": batch_rate,
        "tokens": tokens[0].tolist(),
        "prompt_tokens": int(prompt_inputs(runner.processor, "np")["input_ids"].shape[1]),
        "imports_rss_bytes": imports_bytes,
        "peak_rss_batch1_bytes": batch1_bytes,
        "peak_rss_bytes": peak_resident_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the ONNX export folder")
    parser.add_argument("variant", help='the graphs\' variant: "fp32", "quantized", "q4"')
    parser.add_argument("decoder", choices=("fused", "merged"), help="the decoder graph")
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if sys.modules.get("torch") is not None:
        parser.error("torch is imported in this process, so its memory would count: start it through "
                     "full_size.run_without_torch (as onnx_generation.py does)")  # fmt: skip
    figures = onnx_figures(args.folder, args.variant, args.decoder, args.new_tokens, args.repeats)
    args.json.write_text(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
