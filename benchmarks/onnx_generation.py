"""Time to first token, prompt and decode speed, batch 8 and peak memory of PyTorch fp32 (the model's `generate()`, and
the torch backend that the server runs) and of the ONNX variants (fp32, INT8, q4) on each decoder graph (the fused CPU
decoder and transformers.js' merged one), in one run.

The model has the real sizes of Qwen3-0.6B with a CLIP ViT-B/32 tower (random weights: nothing is downloaded; `--quick`
uses a tiny configuration instead, to check the script). Each engine runs in a process of its own, so its peak resident
memory is its own (after the batch-1 runs and after batch 8's), the ONNX engines in one without torch as an export is
deployed (`onnx_engine.py`), and generates the same number of tokens from the same prompt (one 224x224 picture and a
question), alone and as 8 copies; a streamer stamps the time of every token (the torch backend streams text, not
tokens: its decode rate is that of a request for all the tokens less one for a single token). The memory-bandwidth
floor is the time to read each engine's decoder weights once per token at the copy bandwidth measured in this run.

With `--llama-cpp BIN_DIR` (the folder of llama.cpp's executables that scripts/build_llama_cpp.sh prints), the same
model is also exported with `llava-qwen3-export-gguf` at f32, q8_0 and Q4_K_M and timed in llama-server with the same
picture and prompt (`llama_cpp_yardstick.py`), each in turns with the fused ONNX variant it rivals: one run of each,
then again, so that both see the machine at the same speed; the ratios are each pair's, as median and range. Also
llama-server's peak resident memory after its runs (one request at a time, with its 2,048-position context's cache)
against its files' bytes (language model and mmproj).

    python benchmarks/onnx_generation.py [--new-tokens 48] [--repeats 3] [--workdir DIR] [--llama-cpp BIN_DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.build import finish_generation_config
from llava_qwen3.conversion.export_gguf import GgufExport
from llava_qwen3.conversion.export_onnx import export_onnx
from llava_qwen3.conversion.llama_cpp import llama_server
from llava_qwen3.conversion.tiny import image_processor_for, tiny_config, train_tokenizer
from llava_qwen3.inference import GenerationRequest, GenerationSettings
from llava_qwen3.inference.onnx_layout import FUSED_DECODER, GRAPHS, MERGED_DECODER, external_data_path, graph_path
from llava_qwen3.inference.onnx_runner import LlavaQwen3OnnxModel
from llava_qwen3.inference.torch_backend import TorchBackend
from llava_qwen3.processing import IMAGE_TOKEN

from full_size import (
    CLIP_VIT_B_32,
    QWEN3_0_6B,
    TokenClock,
    backend_decode,
    copy_bandwidth,
    peak_resident_bytes,
    run_without_torch,
)
from llama_cpp_yardstick import GGUF_TYPES, check_tools, export_variants, llama_cpp_run
from onnx_engine import BATCH, one_run, onnx_new_tokens, prompt_inputs, prompt_picture_and_text, timed

# Each row: the engine, the export variant and the decoder graph.
ENGINES = {
    "PyTorch fp32": ("torch", "fp32", None),
    "PyTorch fp32, torch backend": ("torch backend", "fp32", None),
    "ONNX fp32, fused decoder": ("onnx", "fp32", "fused"),
    "ONNX fp32, merged decoder": ("onnx", "fp32", "merged"),
    "ONNX INT8, fused decoder": ("onnx", "quantized", "fused"),
    "ONNX INT8, merged decoder": ("onnx", "quantized", "merged"),
    "ONNX q4, fused decoder": ("onnx", "q4", "fused"),
    "ONNX q4, merged decoder": ("onnx", "q4", "merged"),
}
ONNX_ENGINE = Path(__file__).with_name("onnx_engine.py")  # measures one ONNX engine without torch


def build_model(quick: bool) -> tuple[LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor]:
    tokenizer = train_tokenizer()
    if quick:  # the picture at 224 pixels, as in the real run; a tiny tower and language model
        config = tiny_config(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_size=224,
                             vision_overrides={"patch_size": 32})  # fmt: skip
    else:
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


def file_bytes(path: Path) -> int:
    data = external_data_path(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def engine_files(folder: Path, variant: str, decoder: str | None) -> tuple[int, int]:
    """Bytes of the decoder's weights (read once per token) and of all the weights the engine loads."""
    if decoder is None:  # PyTorch: the fp32 decoder graph holds exactly the language model and head
        checkpoint = folder.parent / "checkpoint"
        return file_bytes(graph_path(folder, MERGED_DECODER, "fp32")), sum(
            path.stat().st_size for path in checkpoint.glob("*.safetensors")
        )
    decoder_bytes = file_bytes(graph_path(folder, FUSED_DECODER if decoder == "fused" else MERGED_DECODER, variant))
    others = [graph for graph in GRAPHS if graph != MERGED_DECODER]
    return decoder_bytes, decoder_bytes + sum(file_bytes(graph_path(folder, graph, variant)) for graph in others)


def measure_engine(engine: str, workdir: Path, new_tokens: int, repeats: int, threads: int) -> dict:
    """One engine's figures, in a process of its own: a PyTorch engine in a spawned process of this script, an ONNX
    engine in `onnx_engine.py` without torch, as an ONNX export is deployed."""
    kind, variant, decoder = ENGINES[engine]
    if kind == "onnx":
        with tempfile.TemporaryDirectory() as scratch:
            output = Path(scratch) / "figures.json"
            arguments = [str(workdir / "export"), variant, decoder, "--json", str(output)]
            run_without_torch(ONNX_ENGINE, [*arguments, "--new-tokens", str(new_tokens), "--repeats", str(repeats)])
            figures = json.loads(output.read_text())
    else:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            figures = pool.apply(torch_figures, (kind, workdir / "checkpoint", new_tokens, repeats, threads))
    decoder_bytes, loaded_bytes = engine_files(workdir / "export", variant, decoder)
    return {**figures, "decoder_bytes": decoder_bytes, "loaded_bytes": loaded_bytes}


def torch_figures(kind: str, checkpoint: Path, new_tokens: int, repeats: int, threads: int) -> dict:
    """A PyTorch engine's figures (`kind` "torch": the model's `generate()`, every token stamped by a streamer;
    "torch backend": the server's engine, whose first token is a one-token request's time and whose decode rate is
    `backend_decode`'s, since it streams text, not timed tokens), and this process's peak resident memory after the
    imports, after the batch-1 runs and after the batch-8 runs."""
    imports_bytes = peak_resident_bytes()  # Python, torch, transformers, onnxruntime: before any weight
    torch.set_num_threads(threads)
    model = LlavaQwen3ForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = LlavaQwen3Processor.from_pretrained(checkpoint)
    one, batch = prompt_inputs(processor, "pt"), prompt_inputs(processor, "pt", BATCH)
    if kind == "torch backend":
        model.generation_config.eos_token_id = None  # exactly the tokens asked for, as the other engines give
        backend = TorchBackend(model, processor)
        backend_decode(backend, one, new_tokens)  # warm-up
        runs = [backend_decode(backend, one, new_tokens) for _ in range(repeats)]
        first, rate = statistics.median(run[1] for run in runs), statistics.median(run[0] for run in runs)
        batch1_bytes = peak_resident_bytes()
        backend_decode(backend, batch, new_tokens)  # warm-up: batch 8's shapes are new to the kernels
        batch_rate = statistics.median(BATCH * backend_decode(backend, batch, new_tokens)[0] for _ in range(repeats))
        settings = GenerationSettings(max_new_tokens=new_tokens)
        tokens = backend.generate([GenerationRequest({}, settings, encoded=one)])[0].token_ids
    else:

        def run(clock: TokenClock, inputs: dict) -> torch.Tensor:
            with torch.inference_mode():
                output = model.generate(
                    **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=clock
                )
            return output[:, inputs["input_ids"].shape[1] :]

        first, rate, answer = timed(lambda clock: run(clock, one), repeats)
        tokens = answer[0].tolist()
        batch1_bytes = peak_resident_bytes()
        _, batch_rate, _ = timed(lambda clock: run(clock, batch), repeats)
    return {
        "ttft_s": first,
        "decode_tok_s": rate,
        "batch_tok_s": batch_rate,
        "tokens": tokens,
        "prompt_tokens": int(one["input_ids"].shape[1]),
        "imports_rss_bytes": imports_bytes,
        "peak_rss_batch1_bytes": batch1_bytes,
        "peak_rss_bytes": peak_resident_bytes(),
    }


def in_turns_with_llama_cpp(
    engine: str, workdir: Path, export: GgufExport, tools: Path, new_tokens: int, repeats: int, threads: int
) -> dict:
    """An ONNX engine and llama-server with its rival GGUF file, in turns in one process: one run of each, `repeats`
    times after a warm-up of each. The speed of a shared virtual machine drifts from one minute to the next (the same
    decoder decoded at 12 and at 17 tok/s a minute apart); a pair of runs seconds apart sees the same machine, so each
    pair gives a ratio, and the ratios' median and range are the comparison."""
    _, variant, decoder = ENGINES[engine]
    runner = LlavaQwen3OnnxModel(workdir / "export", variant=variant, decoder=decoder)
    image, prompt = prompt_picture_and_text(runner.processor)
    ours, theirs = [], []
    with llama_server(export.language_model, export.projector, tools, threads) as server:
        for _ in range(repeats + 1):
            ours.append(one_run(lambda clock: onnx_new_tokens(runner, clock, 1, new_tokens)))
            theirs.append(llama_cpp_run(server, prompt, image, new_tokens))
        llama_cpp_peak_bytes = peak_resident_bytes(server.pid)  # llama-server's, after its runs at batch 1
    ours, theirs = ours[1:], theirs[1:]  # the first of each is the warm-up
    prompt_tokens = int(prompt_inputs(runner.processor, "np")["input_ids"].shape[1])
    runs = [
        {
            "ttft_s": our[0],
            "decode_tok_s": our[1],
            "llama_cpp_ttft_s": their.ttft_s,
            "llama_cpp_decode_tok_s": their.decode_tok_s,
            "decode_ratio": our[1] / their.decode_tok_s,
            "prompt_ratio": (prompt_tokens / our[0]) / (their.prompt_tokens / their.ttft_s),
        }
        for our, their in zip(ours, theirs, strict=True)
    ]
    return {
        **{key: statistics.median(run[key] for run in runs) for key in runs[0]},
        "runs": runs,
        "prompt_tokens": prompt_tokens,
        "llama_cpp_prompt_tokens": theirs[-1].prompt_tokens,
        "tokens": ours[-1][2][0].tolist(),
        "llama_cpp_tokens": theirs[-1].tokens,
        "llama_cpp_file_bytes": export.language_model.stat().st_size,
        "llama_cpp_files_bytes": export.language_model.stat().st_size + export.projector.stat().st_size,
        "llama_cpp_peak_rss_bytes": llama_cpp_peak_bytes,
    }


def median_and_range(runs: list[dict], key: str) -> str:
    """The median of the runs' figure `key` and its range, as a ratio: "0.96x (0.83-1.25)"."""
    values = [run[key] for run in runs]
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the export goes, reused when there (default: temporary)")
    parser.add_argument("--llama-cpp", type=Path, help="folder of llama.cpp's executables, to compare with")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration: checks the script in seconds")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.llama_cpp:
        check_tools(args.llama_cpp)  # before the long runs, not after them
    threads = os.cpu_count() or 1

    model, processor = build_model(args.quick)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    if not (workdir / "checkpoint" / "config.json").is_file():
        model.save_pretrained(workdir / "checkpoint")
        processor.save_pretrained(workdir / "checkpoint")
    if not (workdir / "export").exists():
        start = time.perf_counter()
        export_onnx(model, workdir / "export", processor=processor, quantize=("quantized", "q4"), fused_decoder=True)
        print(f"export with quantised variants and fused decoders: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"{args.new_tokens} new tokens; batch 1 and {BATCH}; {threads} threads", flush=True)

    bandwidth_before = copy_bandwidth()
    results = {}
    for index, engine in enumerate(ENGINES, 1):
        results[engine] = measure_engine(engine, workdir, args.new_tokens, args.repeats, threads)
        figures = results[engine]
        print(
            f"[{index}/{len(ENGINES)}] {engine}: first token {figures['ttft_s'] * 1000:.0f} ms, decode "
            f"{figures['decode_tok_s']:.3g} tok/s, batch {BATCH} {figures['batch_tok_s']:.3g} tok/s",
            flush=True,
        )
    # The best of two measurements: on a shared machine, a neighbour's load only ever lowers it.
    bandwidth = max(bandwidth_before, copy_bandwidth())
    reference = results["PyTorch fp32"]
    prompt_tokens = reference["prompt_tokens"]
    print(f"\nprompt: {prompt_tokens} tokens with 1 image; copy bandwidth: {bandwidth / 1e9:.1f} GB/s\n")
    print(
        f"| engine | decoder weights | time to first token | prompt | decode | vs PyTorch fp32 | bandwidth floor | "
        f"of floor | batch {BATCH} | batch {BATCH} / batch 1 | loaded weights | imports | peak memory, batch 1 | "
        f"of loaded weights | peak memory, batch {BATCH} | of loaded weights | tokens equal to PyTorch |"
    )
    print("| --- " * 17 + "|")
    for engine, figures in results.items():
        floor = bandwidth / figures["decoder_bytes"]
        same = int(np.cumprod(np.equal(figures["tokens"], reference["tokens"])).sum())
        peaks = [figures["peak_rss_batch1_bytes"], figures["peak_rss_bytes"]]
        print(
            f"| {engine} | {figures['decoder_bytes'] / 1e9:.3g} GB | {figures['ttft_s'] * 1000:.3g} ms | "
            f"{prompt_tokens / figures['ttft_s']:.3g} tok/s | {figures['decode_tok_s']:.3g} tok/s | "
            f"{figures['decode_tok_s'] / reference['decode_tok_s']:.2f}x | {floor:.3g} tok/s | "
            f"{figures['decode_tok_s'] / floor:.0%} | {figures['batch_tok_s']:.3g} tok/s | "
            f"{figures['batch_tok_s'] / figures['decode_tok_s']:.2f}x | {figures['loaded_bytes'] / 1e9:.3g} GB | "
            f"{figures['imports_rss_bytes'] / 1e9:.2f} GB | "
            + "".join(f"{peak / 1e9:.3g} GB | {peak / figures['loaded_bytes']:.2f}x | " for peak in peaks)
            + f"first {same}/{len(reference['tokens'])} |"
        )
    report = {"bandwidth_bytes_per_s": bandwidth, "engines": results}
    if args.llama_cpp:
        gguf = export_variants(model, processor, workdir, args.llama_cpp)
        rivals = {engine: variant for engine, (_, variant, decoder) in ENGINES.items() if decoder == "fused"}
        print(f"\nthe fused decoders and llama.cpp in turns, {args.repeats} pairs of runs each:", flush=True)
        llama = {}
        for index, (engine, variant) in enumerate(rivals.items(), 1):
            arguments = (engine, workdir, gguf[variant], args.llama_cpp, args.new_tokens, args.repeats, threads)
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                llama[engine] = pool.apply(in_turns_with_llama_cpp, arguments)
            print(f"[{index}/{len(rivals)}] {engine} and llama.cpp {GGUF_TYPES[variant]}", flush=True)
        report["llama.cpp"] = llama
        print(
            "\n| ONNX, fused decoder | time to first token | prompt | decode | llama.cpp | language model file | "
            "time to first token | prompt | decode | tokens equal to PyTorch | ONNX / llama.cpp decode | "
            "ONNX / llama.cpp prompt | llama.cpp peak memory, batch 1 | of its files |"
        )
        print("| --- " * 14 + "|")
        for engine, pair in llama.items():
            same = int(np.cumprod(np.equal(pair["llama_cpp_tokens"], reference["tokens"])).sum())
            ours_prompt = pair["prompt_tokens"] / pair["ttft_s"]
            theirs_prompt = pair["llama_cpp_prompt_tokens"] / pair["llama_cpp_ttft_s"]
            print(
                f"| {engine.split(',')[0]} | {pair['ttft_s'] * 1000:.3g} ms | {ours_prompt:.3g} tok/s | "
                f"{pair['decode_tok_s']:.3g} tok/s | {GGUF_TYPES[rivals[engine]]} | "
                f"{pair['llama_cpp_file_bytes'] / 1e9:.3g} GB | {pair['llama_cpp_ttft_s'] * 1000:.3g} ms | "
                f"{theirs_prompt:.3g} tok/s | {pair['llama_cpp_decode_tok_s']:.3g} tok/s | "
                f"first {same}/{len(reference['tokens'])} | {median_and_range(pair['runs'], 'decode_ratio')} | "
                f"{median_and_range(pair['runs'], 'prompt_ratio')} | "
                f"{pair['llama_cpp_peak_rss_bytes'] / 1e9:.3g} GB | "
                f"{pair['llama_cpp_peak_rss_bytes'] / pair['llama_cpp_files_bytes']:.2f}x |"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
