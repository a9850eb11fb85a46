"""PyTorch inference of this model against transformers' built-in Llava with the same configuration, in one run.

For each tower (CLIP ViT-B/32 and SigLIP-base-patch16-224, both with Qwen3-0.6B; random weights, nothing is
downloaded) the run saves a safetensors checkpoint of this model and of a built-in `LlavaForConditionalGeneration`
with the same sizes, then measures each in its own process (so that peak resident memory is that model's): load
time (from the page cache), time to first token for one image and a 20-token question, decode tokens/s at batch 1,
tokens/s at batch 8, the second turn of a chat about the same image (recomputed from scratch, and reusing the first
turn's KV cache as transformers' prompt-reuse recipe does), and peak resident memory (also after the imports, the
load, the batch-1 runs and the batch-8 runs, to show where it grows). This model's checkpoint is measured the same way
through the torch backend too, what the server, the evaluation and the generator run (its second turn: with the
backend's prefix cache holding the first turn, against none). The memory-bandwidth floor is the time to read the
language model's weights once per token at the copy bandwidth measured in this run. Every figure is also given as a
ratio to the built-in Llava's; decode and time to first token are also measured with both models in one process, in
turns, so that the ratio does not carry the machine's drift between two processes. The same checkpoint of this model
is also measured with INT8 linear layers (`quantize_linear_layers_int8`, the torch backend's `quantize="int8"`), as a
ratio to its fp32 figures, and through the torch backend with a bfloat16 KV cache (`kv_cache_dtype`), against the
backend's fp32 cache: decode, batch 8, peak memory, and how many greedy tokens equal those of the fp32 cache.

    python benchmarks/pytorch_inference.py [--new-tokens 32] [--repeats 3] [--json results.json] [--quick]

`--quick` runs tiny configurations in seconds (the test suite runs it so the script cannot rot).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, LlavaConfig, LlavaForConditionalGeneration

from llava_qwen3 import LlavaQwen3Config, LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion import train_tokenizer
from llava_qwen3.conversion.tiny import image_processor_for
from llava_qwen3.inference import GenerationRequest, GenerationSettings
from llava_qwen3.inference.int8 import quantize_linear_layers_int8
from llava_qwen3.inference.torch_backend import TorchBackend
from llava_qwen3.modeling import CACHE_ARGUMENT
from llava_qwen3.processing import IMAGE_TOKEN

from full_size import (
    CLIP_VIT_B_32,
    QWEN3_0_6B,
    SIGLIP_BASE_PATCH16_224,
    TokenClock,
    backend_decode,
    backend_seconds,
    backend_tokens,
    copy_bandwidth,
    peak_resident_bytes,
)

IMPLEMENTATIONS = {"llava_qwen3": LlavaQwen3ForConditionalGeneration, "built-in Llava": LlavaForConditionalGeneration}
INT8 = "llava_qwen3 INT8"  # this model's checkpoint, loaded with INT8 linear layers
BACKEND = "llava_qwen3 torch backend"  # this model through the inference interface (its own Qwen3 steps on CPU)
NARROW_CACHE = "llava_qwen3 torch backend, bfloat16 KV cache"  # the same with the backend's kv_cache_dtype
NARROW_CACHE_DTYPE = "bfloat16"
TOWERS = {"CLIP ViT-B/32": CLIP_VIT_B_32, "SigLIP-base-patch16-224": SIGLIP_BASE_PATCH16_224}
QUICK_SIZES = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
QUICK_TOWER_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
QUESTION_TOKENS = 20
BATCH = 8


def configs(tower: dict, quick: bool) -> dict[str, object]:
    """This model's and built-in Llava's configurations for `tower` with Qwen3-0.6B (or tiny ones)."""
    text, vision = dict(QWEN3_0_6B), dict(tower)
    if quick:
        text.update(QUICK_SIZES, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
        vision.update(QUICK_TOWER_SIZES)
    image_token_id = text["vocab_size"] - 1
    # CLIP's first token is its class embedding, which LLaVA drops; SigLIP has none.
    strategy = "default" if vision["model_type"] == "clip_vision_model" else "full"
    shared = {"image_token_id": image_token_id, "vision_feature_layer": -2, "vision_feature_select_strategy": strategy}
    ours = LlavaQwen3Config(
        vision_config=AutoConfig.for_model(**vision), text_config=AutoConfig.for_model(**text), **shared
    )
    built_in = LlavaConfig(
        vision_config=AutoConfig.for_model(**vision),
        text_config=AutoConfig.for_model(**text),
        image_token_index=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        image_seq_length=ours.image_seq_length,
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    return {"llava_qwen3": ours, "built-in Llava": built_in}


def save_checkpoints(tower: dict, workdir: Path, quick: bool) -> dict[str, Path]:
    """Random-weight checkpoints of both implementations (speed does not depend on the values)."""
    folders = {}
    for name, config in configs(tower, quick).items():
        folder = workdir / f"{name.replace(' ', '-')}-{tower['model_type']}"
        if not (folder / "config.json").exists():
            torch.manual_seed(0)
            IMPLEMENTATIONS[name](config).save_pretrained(folder)
        folders[name] = folder
    return folders


def prompt(model: torch.nn.Module, batch: int = 1, extra_tokens: int = 0) -> dict[str, torch.Tensor]:
    """One picture's placeholder tokens and a question of QUESTION_TOKENS (+ `extra_tokens`) token ids, per row."""
    config = model.config
    image_token_id, seq_length = config.image_token_id, config.image_seq_length
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(0, image_token_id, (QUESTION_TOKENS + extra_tokens,), generator=generator)
    ids = torch.cat([torch.full((seq_length,), image_token_id), text]).repeat(batch, 1)
    size = config.vision_config.image_size
    pixels = torch.rand((batch, 3, size, size), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def greedy(model: torch.nn.Module, inputs: dict, new_tokens: int, **options: object) -> TokenClock:
    clock = TokenClock()
    with torch.inference_mode():
        model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=clock, **options
        )
    return clock


def decode_rate(model: torch.nn.Module, inputs: dict, new_tokens: int) -> float:
    """Tokens/s between the first and the last generated token (the prefill left out)."""
    stamps = greedy(model, inputs, new_tokens).stamps
    return (len(stamps) - 2) / (stamps[-1] - stamps[1])


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `run()` over `repeats` runs after one warm-up."""
    times = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        run()
        if attempt:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def load(implementation: str, folder: Path) -> torch.nn.Module:
    """`implementation` from its saved checkpoint, in float32 (INT8: then its linear layers quantized), set to
    generate exactly the tokens asked for (random weights would stop at whatever the end-of-text id is)."""
    if implementation == INT8:
        return quantize_linear_layers_int8(load("llava_qwen3", folder))
    model = IMPLEMENTATIONS[implementation].from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of `module`'s parameters and of the packed weights of its INT8 linear layers (which are not
    parameters)."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    packed = [m.weight() for m in module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    return total + sum(w.numel() * w.element_size() for w in packed)


def decoder_bytes(model: torch.nn.Module) -> int:
    """What a decode step reads: the language model and its head, but not the input embedding table (one row a
    token), unless the head is that table (tied fp32 weights)."""
    language_model = model.get_decoder() if hasattr(model, "get_decoder") else model.language_model
    embedding = language_model.get_input_embeddings().weight
    if getattr(model.lm_head, "weight", None) is embedding:
        return tensor_bytes(language_model)
    return tensor_bytes(language_model) - embedding.numel() * embedding.element_size() + tensor_bytes(model.lm_head)


def backend_processor(model: LlavaQwen3ForConditionalGeneration) -> LlavaQwen3Processor:
    """A processor with the project's tokenizer for the torch backend; the model's placeholder id becomes that
    tokenizer's (random weights do not care which id it is)."""
    tokenizer = train_tokenizer()
    model.config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return LlavaQwen3Processor(
        image_processor_for(model.config), tokenizer, image_seq_length=model.config.image_seq_length
    )


def backend_second_turn(
    model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor, repeats: int
) -> dict[str, float]:
    """The second turn through the torch backend: its first token computed from scratch, and with the backend's prefix
    cache holding the first turn (its prompt and answer), each repeat from a freshly primed cache.

    Random weights answer in random token ids, so the first turn's answer is a fixed text; which words they are does
    not change the time."""
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    question = "Which shapes are in the picture, what colours are they, and where are they?"
    first_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    answer = "There is a red circle at the top left and a blue square at the bottom right of the picture."
    conversation = [
        *first_turn,
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {"role": "user", "content": [{"type": "text", "text": "How many green triangles are in the middle of it?"}]},
    ]
    first = {"text": processor.apply_chat_template(first_turn, add_generation_prompt=True) + answer}
    second = {"text": processor.apply_chat_template(conversation, add_generation_prompt=True)}
    one_token = GenerationSettings(max_new_tokens=1)

    def first_token(backend: TorchBackend, record: dict) -> None:
        backend.generate([GenerationRequest({**record, "images": [picture]}, one_token)])

    plain = TorchBackend(model, processor)
    recompute_s = median_seconds(lambda: first_token(plain, second), repeats)
    times = []
    for _ in range(repeats):
        cached = TorchBackend(model, processor, prefix_cache_bytes=2**30)
        first_token(cached, first)
        start = time.perf_counter()
        first_token(cached, second)
        times.append(time.perf_counter() - start)
    return {"backend_second_turn_recompute_s": recompute_s, "backend_second_turn_cached_s": statistics.median(times)}


def peak_rss_gb() -> float:
    """The largest resident set this process has had so far, in GB (`peak_resident_bytes`)."""
    return peak_resident_bytes() / 1e9


def read_through(folder: Path) -> None:
    """Reads the folder's files once, so that every load is timed from the page cache, not from a cold disk. Into one
    small buffer, so that the peak resident set after the imports is the imports' (64 MiB chunks added 0.07 GB)."""
    buffer = bytearray(2**20)
    for path in folder.iterdir():
        with path.open("rb") as file:
            while file.readinto(buffer):
                pass


def measure(implementation: str, folder: Path, new_tokens: int, repeats: int) -> dict[str, float]:
    """Every figure for one saved checkpoint, measured in this process."""
    read_through(folder)
    stages = {"peak_rss_imports_gb": peak_rss_gb()}  # the process's largest resident set after each stage
    start = time.perf_counter()
    model = load(implementation, folder)
    load_s = time.perf_counter() - start
    stages["peak_rss_loaded_gb"] = peak_rss_gb()
    one = prompt(model)

    ttft_s = median_seconds(lambda: greedy(model, one, 1), repeats)
    rates = [decode_rate(model, one, new_tokens) for _ in range(repeats)]
    stages["peak_rss_batch1_gb"] = peak_rss_gb()
    batch_s = median_seconds(lambda: greedy(model, prompt(model, BATCH), new_tokens), max(1, repeats - 1))
    stages["peak_rss_batch8_gb"] = peak_rss_gb()

    # The second turn: the first turn's prompt and answer, then another question of QUESTION_TOKENS tokens.
    with torch.inference_mode():
        first = model.generate(
            **one, max_new_tokens=new_tokens, do_sample=False, return_dict_in_generate=True, use_cache=True
        )
    history = first.sequences
    follow_up = prompt(model, extra_tokens=QUESTION_TOKENS)["input_ids"][:, -QUESTION_TOKENS:]
    second_ids = torch.cat([history, follow_up], dim=1)
    second = {
        "input_ids": second_ids,
        "attention_mask": torch.ones_like(second_ids),
        "pixel_values": one["pixel_values"],
    }
    # The cache holds the first turn but its last token (generate never feeds the last token back in).
    cached = getattr(first, CACHE_ARGUMENT)
    recompute_s = median_seconds(lambda: greedy(model, second, 1), repeats)
    # The picture is in the cache: built-in Llava would encode it again if given (this model skips it either way).
    text_only = {key: value for key, value in second.items() if key != "pixel_values"}
    reuse_s = median_seconds(lambda: greedy(model, text_only, 1, **{CACHE_ARGUMENT: copy.deepcopy(cached)}), repeats)

    peak_gb = peak_rss_gb()  # before the backend's runs below
    served = backend_second_turn(model, backend_processor(model), repeats) if implementation == INT8 else {}
    return {
        **served,
        **stages,
        "load_s": load_s,
        "ttft_s": ttft_s,
        "decode_tok_s": statistics.median(rates),
        "batch8_tok_s": BATCH * new_tokens / batch_s,
        "second_turn_recompute_s": recompute_s,
        "second_turn_reuse_s": reuse_s,
        "peak_rss_gb": peak_gb,
        "weight_gb": tensor_bytes(model) / 1e9,
        "decoder_weight_gb": decoder_bytes(model) / 1e9,
    }


def measure_backend(folder: Path, new_tokens: int, repeats: int, kv_cache_dtype: str | None = None) -> dict[str, float]:
    """`measure`'s figures for this model's checkpoint through the torch backend; the decode rate as `backend_decode`
    gives it, and the second turn's first token computed with the backend's prefix cache holding the first turn
    ("reuse") and without ("recompute"). With `kv_cache_dtype`, the cache in that dtype, and instead of the second
    turn the share of greedy tokens (batch 1, `new_tokens`) equal to those of the weights' dtype."""
    read_through(folder)
    stages = {"peak_rss_imports_gb": peak_rss_gb()}
    start = time.perf_counter()
    model = load("llava_qwen3", folder)
    processor = backend_processor(model)
    backend = TorchBackend(model, processor, kv_cache_dtype=kv_cache_dtype)
    load_s = time.perf_counter() - start
    stages["peak_rss_loaded_gb"] = peak_rss_gb()
    one = prompt(model)

    backend_seconds(backend, one, 1)  # warm-up: the first request reads the mapped weights in
    runs = [backend_decode(backend, one, new_tokens) for _ in range(repeats)]  # (decode rate, first token) each
    stages["peak_rss_batch1_gb"] = peak_rss_gb()
    batch_s = median_seconds(lambda: backend_seconds(backend, prompt(model, BATCH), new_tokens), max(1, repeats - 1))
    stages["peak_rss_batch8_gb"] = peak_rss_gb()
    figures = {
        **stages,
        "load_s": load_s,
        "ttft_s": statistics.median(run[1] for run in runs),
        "decode_tok_s": statistics.median(run[0] for run in runs),
        "batch8_tok_s": BATCH * new_tokens / batch_s,
        "peak_rss_gb": peak_rss_gb(),
        "weight_gb": tensor_bytes(model) / 1e9,
        "decoder_weight_gb": decoder_bytes(model) / 1e9,
    }
    if kv_cache_dtype is not None:  # after the peak: the exact backend shares the weights, its cache is one row's
        answers = [backend_tokens(each, one, new_tokens)[0] for each in (backend, TorchBackend(model, processor))]
        equal = sum(a == b for a, b in zip(*answers, strict=False))  # a stop token can end either answer early
        return {**figures, "tokens_equal_to_exact_cache": equal / new_tokens}
    second_turn = backend_second_turn(model, processor, repeats)
    return {
        **figures,
        "second_turn_recompute_s": second_turn["backend_second_turn_recompute_s"],
        "second_turn_reuse_s": second_turn["backend_second_turn_cached_s"],
    }


def alternate(folders: dict[str, Path], new_tokens: int, pairs: int) -> dict[str, list[float]]:
    """This model's decode tokens/s and time to first token as ratios to built-in Llava's, both loaded in this
    process and measured in turns, `pairs` times, the order switching each time: one process's figures against
    another's also carry the drift of a shared machine between the two runs, which this spreads over both alike.
    This model is measured twice, through its `generate()` and through the torch backend (what the server, the
    evaluation and the generator run; its decode rate as `backend_decode` gives it)."""
    models = {name: load(name, folders[name]) for name in IMPLEMENTATIONS}
    ours, theirs = IMPLEMENTATIONS
    backend = TorchBackend(models[ours], backend_processor(models[ours]))
    inputs = {name: prompt(model) for name, model in models.items()}

    def through_generate(name: str) -> tuple[float, float]:
        rate = decode_rate(models[name], inputs[name], new_tokens)
        start = time.perf_counter()
        greedy(models[name], inputs[name], 1)
        return rate, time.perf_counter() - start

    contestants = {
        ours: lambda: through_generate(ours),
        theirs: lambda: through_generate(theirs),
        BACKEND: lambda: backend_decode(backend, inputs[ours], new_tokens),
    }
    for measure_once in contestants.values():
        measure_once()  # warm-up
    decode, ttft = {name: [] for name in contestants}, {name: [] for name in contestants}
    for pair in range(pairs):
        for name in list(contestants) if pair % 2 == 0 else list(contestants)[::-1]:
            rate, first_token_s = contestants[name]()
            decode[name].append(rate)
            ttft[name].append(first_token_s)
    return {
        "decode_ratios": [a / b for a, b in zip(decode[ours], decode[theirs], strict=True)],
        "ttft_ratios": [a / b for a, b in zip(ttft[ours], ttft[theirs], strict=True)],
        "backend_decode_ratios": [a / b for a, b in zip(decode[BACKEND], decode[theirs], strict=True)],
        "backend_ttft_ratios": [a / b for a, b in zip(ttft[BACKEND], ttft[theirs], strict=True)],
        "backend_decode_tok_s": decode[BACKEND],
    }


def run_child(options: list[str]) -> dict:
    """The figures a child process of this script prints as its last line."""
    result = subprocess.run([sys.executable, __file__, *options], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(options)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


ROWS = [  # (label, key, unit, higher is better)
    ("load from safetensors", "load_s", "s", False),
    ("time to first token (image + 20 tokens)", "ttft_s", "s", False),
    ("decode, batch 1", "decode_tok_s", "tok/s", True),
    ("throughput, batch 8", "batch8_tok_s", "tok/s", True),
    ("second turn, recomputed: first token", "second_turn_recompute_s", "s", False),
    ("second turn, first turn's cache reused: first token", "second_turn_reuse_s", "s", False),
    ("peak resident memory", "peak_rss_gb", "GB", False),
]


def reuse(figures: dict[str, float]) -> float:
    return figures["second_turn_reuse_s"] / figures["second_turn_recompute_s"]


def by_stage(figures: dict[str, float]) -> str:
    stages = ("imports", "loaded", "batch1", "batch8")
    return " / ".join(f"{figures[f'peak_rss_{stage}_gb']:.2f}" for stage in stages) + " GB"


def served_reuse(figures: dict[str, float]) -> float:
    return figures["backend_second_turn_cached_s"] / figures["backend_second_turn_recompute_s"]


def in_turns(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def per_column(columns: tuple[dict, ...], label: str, cell) -> str:
    """A row of `cell(figures)` for each implementation's column (this model, built-in Llava, the torch backend,
    INT8), the ratio columns left empty."""
    ours, theirs, backend, int8 = (cell(figures) for figures in columns)
    return f"| {label} | {ours} | {theirs} | | {backend} | | {int8} | |"


def narrow_cache_rows(narrow: dict[str, float], exact: dict[str, float]) -> list[str]:
    """Rows in the torch backend's column for its bfloat16 KV cache, against its cache in the weights' fp32."""
    label = f"torch backend, {NARROW_CACHE_DTYPE} KV cache"
    peak = narrow["peak_rss_gb"]
    cells = {
        "decode, batch 1 (vs fp32 cache)": f"{narrow['decode_tok_s']:.3g} tok/s "
        f"({narrow['decode_tok_s'] / exact['decode_tok_s']:.2f}x)",
        "throughput, batch 8 (vs fp32 cache)": f"{narrow['batch8_tok_s']:.3g} tok/s "
        f"({narrow['batch8_tok_s'] / exact['batch8_tok_s']:.2f}x)",
        f"peak memory vs weight bytes (fp32 cache {exact['peak_rss_gb'] / exact['weight_gb']:.2f}x)": (
            f"{peak / narrow['weight_gb']:.2f}x ({peak:.3g} GB)"
        ),
        "greedy tokens equal to the fp32 cache's, batch 1": f"{narrow['tokens_equal_to_exact_cache']:.0%}",
    }
    return [f"| {label}: {measure} | | | | {cell} | | | |" for measure, cell in cells.items()]


def table(results: dict, alternating: dict, narrow_caches: dict, bandwidth: float, language_model: str) -> str:
    """The Markdown tables, one per tower: this model against built-in Llava (also measured in turns in one process),
    through the torch backend against built-in Llava (and with a bfloat16 KV cache against its fp32 one), and INT8
    against fp32, with the bandwidth floor of each."""
    lines = []
    for tower, by_implementation in results.items():
        turns = alternating[tower]
        ours, theirs, backend, int8 = (by_implementation[name] for name in (*IMPLEMENTATIONS, BACKEND, INT8))
        floor, int8_floor = (bandwidth / (figures["decoder_weight_gb"] * 1e9) for figures in (ours, int8))
        lines.append(
            f"\n{tower} + {language_model}: weights {ours['weight_gb']:.2f} GB, "
            f"language model {ours['decoder_weight_gb']:.2f} GB (INT8: {int8['weight_gb']:.2f} and "
            f"{int8['decoder_weight_gb']:.2f} GB)"
        )
        lines += [
            "| measure | llava_qwen3 | built-in Llava | ratio | torch backend | backend / built-in | llava_qwen3 INT8 "
            "| INT8 / fp32 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, key, unit, _ in ROWS:
            lines.append(
                f"| {label} | {ours[key]:.3g} {unit} | {theirs[key]:.3g} {unit} | {ours[key] / theirs[key]:.2f}x "
                f"| {backend[key]:.3g} {unit} | {backend[key] / theirs[key]:.2f}x "
                f"| {int8[key]:.3g} {unit} | {int8[key] / ours[key]:.2f}x |"
            )

        columns = (ours, theirs, backend, int8)
        lines += [
            f"| decode, batch 1, in turns in one process: median of {len(turns['decode_ratios'])} ratios (range) | "
            f"| | {in_turns(turns['decode_ratios'])} | | | | |",
            f"| time to first token, in turns in one process: the same | | | {in_turns(turns['ttft_ratios'])} "
            "| | | | |",
            f"| torch backend, in turns with both: decode vs built-in Llava "
            f"({statistics.median(turns['backend_decode_tok_s']):.3g} tok/s, floor {floor:.1f}) | | | "
            f"{in_turns(turns['backend_decode_ratios'])} | | | | |",
            f"| torch backend, in turns with both: time to first token vs built-in Llava | | | "
            f"{in_turns(turns['backend_ttft_ratios'])} | | | | |",
            per_column(
                columns,
                f"decode vs bandwidth floor (fp32 {floor:.1f}, INT8 {int8_floor:.1f} tok/s)",
                lambda figures: f"{figures['decode_tok_s'] * figures['decoder_weight_gb'] * 1e9 / bandwidth:.0%}",
            ),
            per_column(
                columns,
                "batch 8 vs batch 1",
                lambda figures: f"{figures['batch8_tok_s'] / figures['decode_tok_s']:.2f}x",
            ),
            per_column(columns, "second turn reused vs recomputed", lambda figures: f"{reuse(figures):.2f}x"),
            f"| INT8's second turn through the torch backend, prefix cache vs none | | | | | | "
            f"{served_reuse(int8):.2f}x | |",
            per_column(columns, "peak memory after imports / load / batch 1 / batch 8", by_stage),
            per_column(
                columns,
                "peak memory vs weight bytes",
                lambda figures: f"{figures['peak_rss_gb'] / figures['weight_gb']:.2f}x",
            ),
            *narrow_cache_rows(narrow_caches[tower], backend),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the checkpoints go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="tiny configurations, for a check that the script runs")
    children = [*IMPLEMENTATIONS, BACKEND, NARROW_CACHE, INT8]
    parser.add_argument("--measure", choices=children, help=argparse.SUPPRESS)  # a child
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--alternate", type=Path, nargs=len(IMPLEMENTATIONS), help=argparse.SUPPRESS)  # a child too
    args = parser.parse_args()
    if args.measure in (BACKEND, NARROW_CACHE):
        kv_cache_dtype = NARROW_CACHE_DTYPE if args.measure == NARROW_CACHE else None
        print(json.dumps(measure_backend(args.folder, args.new_tokens, args.repeats, kv_cache_dtype)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.folder, args.new_tokens, args.repeats)))
        return
    if args.alternate:
        folders = dict(zip(IMPLEMENTATIONS, args.alternate, strict=True))
        print(json.dumps(alternate(folders, args.new_tokens, 2 * args.repeats)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pytorch-bench-"))
    common = ["--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
    results, alternating, narrow_caches = {}, {}, {}
    for tower_name, tower in TOWERS.items():
        folders = save_checkpoints(tower, workdir, args.quick)
        results[tower_name] = {
            name: run_child(["--measure", name, "--folder", str(folder), *common]) for name, folder in folders.items()
        }
        for variant in (BACKEND, INT8):  # this model's checkpoint, through the backend and with INT8 layers
            results[tower_name][variant] = run_child(
                ["--measure", variant, "--folder", str(folders["llava_qwen3"]), *common]
            )
        alternating[tower_name] = run_child(["--alternate", *(str(folders[name]) for name in IMPLEMENTATIONS), *common])
        narrow_caches[tower_name] = run_child(
            ["--measure", NARROW_CACHE, "--folder", str(folders["llava_qwen3"]), *common]
        )
    bandwidth = copy_bandwidth()
    print(f"{torch.get_num_threads()} threads; copy bandwidth {bandwidth / 1e9:.1f} GB/s; {args.new_tokens} new tokens")
    language_model = "tiny Qwen3 (--quick)" if args.quick else "Qwen3-0.6B"
    print(table(results, alternating, narrow_caches, bandwidth, language_model))
    if args.json:
        figures = {
            "copy_bandwidth_gb_s": bandwidth / 1e9,
            "results": results,
            "alternating": alternating,
            "narrow_kv_cache": narrow_caches,
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
