"""The PyTorch benchmark runs end to end on tiny configurations and reports every figure for both implementations and
this model's INT8 load option (its real-size figures are in docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built on the installed transformers' own Llava, with transformers 5's loading keywords.
pytestmark = [pytest.mark.slow, pytest.mark.one_line]


def test_pytorch_benchmark_reports_every_figure_for_both_implementations_and_int8(tmp_path):
    output = tmp_path / "figures.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "pytorch_inference.py"), "--quick"]
    command += ["--new-tokens", "3", "--repeats", "1", "--workdir", str(tmp_path / "work"), "--json", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(output.read_text())
    assert figures["copy_bandwidth_gb_s"] > 0
    assert set(figures["results"]) == {"CLIP ViT-B/32", "SigLIP-base-patch16-224"}
    for by_implementation in figures["results"].values():
        assert set(by_implementation) == {"llava_qwen3", "built-in Llava", "llava_qwen3 INT8"}
        # INT8 weights are a quarter of fp32's bytes, except the norms and the input embedding table.
        assert by_implementation["llava_qwen3 INT8"]["weight_gb"] < by_implementation["llava_qwen3"]["weight_gb"]
        for name, measured in by_implementation.items():
            served = (
                set()
                if name == "built-in Llava"
                else {"backend_second_turn_recompute_s", "backend_second_turn_cached_s"}
            )
            assert set(measured) == {
                "load_s",
                "ttft_s",
                "decode_tok_s",
                "batch8_tok_s",
                "second_turn_recompute_s",
                "second_turn_reuse_s",
                "peak_rss_gb",
                "peak_rss_imports_gb",
                "peak_rss_loaded_gb",
                "peak_rss_batch1_gb",
                "peak_rss_batch8_gb",
                "weight_gb",
                "decoder_weight_gb",
                *served,
            }
            assert all(value > 0 for value in measured.values()), measured
    assert set(figures["alternating"]) == set(figures["results"])
    for in_turns in figures["alternating"].values():  # --repeats 1: two pairs, one in each order
        assert {key: len(ratios) for key, ratios in in_turns.items()} == {"decode_ratios": 2, "ttft_ratios": 2}
        assert all(ratio > 0 for ratios in in_turns.values() for ratio in ratios)
    assert "| decode, batch 1 |" in result.stdout and "| second turn reused vs recomputed |" in result.stdout
    assert "| second turn through the torch backend, prefix cache vs none |" in result.stdout
    assert "| peak memory after imports / load / batch 1 / batch 8 |" in result.stdout
    assert "| decode, batch 1, in turns in one process: median of 2 ratios (range) |" in result.stdout
