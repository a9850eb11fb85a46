"""The PyTorch benchmark runs end to end on tiny configurations and reports every figure for both implementations,
this model through the torch backend (also with a bfloat16 KV cache) and its INT8 load option (its real-size figures
are in docs/performance.md):
every figure finite and positive, and every ratio in its tables the ratio of the figures it prints, or of the raw
figures it writes, within rounding. The answer-growth benchmark likewise: each engine's growth the ratio of its
figures, and against `generate`'s. The ONNX benchmark likewise: every engine in its own process, each ratio of its
table that of its raw figures."""

from __future__ import annotations

import importlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The ratios are printed with 2 decimals and the figures with 3 significant digits ("%.3g"): a printed figure is within
# half a unit of its third digit of the raw one, so a ratio of two printed figures is within about 1% of the raw ratio.
RATIO_ROUNDING = 0.005
FIGURE_ROUNDING = 0.005  # relative

# Built on the installed transformers' own Llava, with transformers 5's loading keywords.
pytestmark = [pytest.mark.slow, pytest.mark.one_line]


def _number(cell: str) -> float:
    """The number a table cell starts with: "1.23 tok/s", "0.98x (0.95-1.01)", "45%" (as 0.45)."""
    number = float(re.match(r"[-+0-9.e]+", cell).group())
    return number / 100 if cell.endswith("%") else number


def _assert_ratio(printed: str, ratio: float, rounding: float = RATIO_ROUNDING) -> None:
    assert math.isfinite(ratio) and ratio > 0, ratio
    assert abs(_number(printed) - ratio) <= rounding + 1e-9, (printed, ratio)


def _tables(stdout: str, towers: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each tower's table, as its cells after the label, by label."""
    tables = {}
    for tower, section in zip(towers, re.split(r"^(?=\S.* \+ .*: weights )", stdout, flags=re.M)[1:], strict=True):
        assert section.startswith(f"{tower} + "), section[:80]
        rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
        tables[tower] = {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}
    return tables


def _table_rows(stdout: str, header: str) -> list[list[str]]:
    """The cells of each row of the table whose header line starts with `header`."""
    lines = stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # past the header and its separator
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


# The rows that print one ratio per implementation, from figures the table does not print: a label's beginning, the
# implementations with a ratio in that row, and the ratio from an implementation's raw figures and the copy bandwidth.
EVERY_COLUMN = ("llava_qwen3", "built-in Llava", "llava_qwen3 torch backend", "llava_qwen3 INT8")
DERIVED_RATIOS = [
    (
        "decode vs bandwidth floor",
        EVERY_COLUMN,
        lambda figures, bandwidth: figures["decode_tok_s"] * figures["decoder_weight_gb"] * 1e9 / bandwidth,
    ),
    (
        "batch 8 vs batch 1",
        EVERY_COLUMN,
        lambda figures, _: figures["batch8_tok_s"] / figures["decode_tok_s"],
    ),
    (
        "second turn reused vs recomputed",
        EVERY_COLUMN,
        lambda figures, _: figures["second_turn_reuse_s"] / figures["second_turn_recompute_s"],
    ),
    (
        "INT8's second turn through the torch backend, prefix cache vs none",
        ("llava_qwen3 INT8",),
        lambda figures, _: figures["backend_second_turn_cached_s"] / figures["backend_second_turn_recompute_s"],
    ),
    (
        "peak memory vs weight bytes",
        EVERY_COLUMN,
        lambda figures, _: figures["peak_rss_gb"] / figures["weight_gb"],
    ),
]
COLUMNS = dict(zip(EVERY_COLUMN, (0, 1, 3, 5), strict=True))  # the implementations' cells in a row


def _row(table: dict[str, list[str]], beginning: str) -> list[str]:
    (label,) = [label for label in table if label.startswith(beginning)]
    return table[label]


def _check_measure_rows(table: dict[str, list[str]], results: dict, rows: list[tuple]) -> None:
    """Each measure's row: the four figures are the raw ones to 3 digits, and the three ratios are the printed
    figures' (this model and the torch backend to built-in Llava, INT8 to fp32) within the rounding of the figures and
    of the ratio."""
    for label, key, unit, _ in rows:
        ours, theirs, ratio, backend, backend_ratio, int8, int8_ratio = table[label]
        for cell, name in zip((ours, theirs, backend, int8), EVERY_COLUMN, strict=True):
            assert cell.endswith(f" {unit}"), cell
            assert math.isclose(_number(cell), results[name][key], rel_tol=FIGURE_ROUNDING), (cell, results[name][key])
        for printed, top, bottom in ((ratio, ours, theirs), (backend_ratio, backend, theirs), (int8_ratio, int8, ours)):
            quotient = _number(top) / _number(bottom)
            _assert_ratio(printed, quotient, RATIO_ROUNDING + 2 * FIGURE_ROUNDING * quotient)


def _check_in_turns(table: dict[str, list[str]], in_turns: dict[str, list[float]]) -> None:
    """The in-turns rows: the median and range of the raw ratios."""
    for beginning, ratios in (
        ("decode, batch 1, in turns", in_turns["decode_ratios"]),
        ("time to first token, in turns", in_turns["ttft_ratios"]),
        ("torch backend, in turns with both: decode", in_turns["backend_decode_ratios"]),
        ("torch backend, in turns with both: time to first token", in_turns["backend_ttft_ratios"]),
    ):
        cell = _row(table, beginning)[2]
        low, high = re.search(r"\(([0-9.]+)-([0-9.]+)\)", cell).groups()
        for printed, ratio in ((cell, statistics.median(ratios)), (low, min(ratios)), (high, max(ratios))):
            _assert_ratio(printed, ratio)


def _check_narrow_cache_rows(table: dict[str, list[str]], narrow: dict, exact: dict) -> None:
    """The torch backend's bfloat16-cache rows: its figures, and their ratios to the backend's fp32 cache."""
    backend = COLUMNS["llava_qwen3 torch backend"]
    for key in ("decode_tok_s", "batch8_tok_s"):
        beginning = "decode, batch 1" if key == "decode_tok_s" else "throughput, batch 8"
        cell = _row(table, f"torch backend, bfloat16 KV cache: {beginning} (vs fp32 cache)")[backend]
        assert math.isclose(_number(cell), narrow[key], rel_tol=FIGURE_ROUNDING), (cell, narrow[key])
        _assert_ratio(re.search(r"\(([0-9.]+)x\)", cell).group(1), narrow[key] / exact[key])
    label = next(label for label in table if label.startswith("torch backend, bfloat16 KV cache: peak memory"))
    _assert_ratio(re.search(r"fp32 cache ([0-9.]+)x", label).group(1), exact["peak_rss_gb"] / exact["weight_gb"])
    _assert_ratio(table[label][backend], narrow["peak_rss_gb"] / narrow["weight_gb"])
    cell = _row(table, "torch backend, bfloat16 KV cache: greedy tokens equal")[backend]
    # 0% too on tiny random weights, whose near-equal logits a narrower cache can reorder from the first token on.
    assert abs(_number(cell) - narrow["tokens_equal_to_exact_cache"]) <= RATIO_ROUNDING + 1e-9, cell


def _check_tables(stdout: str, figures: dict, measure_rows: list[tuple]) -> None:
    """Every ratio the tables print, against the figures printed beside it or, where the tables do not print them,
    against the raw figures in the JSON."""
    bandwidth = figures["copy_bandwidth_gb_s"] * 1e9
    for tower, table in _tables(stdout, list(figures["results"])).items():
        results = figures["results"][tower]
        _check_measure_rows(table, results, measure_rows)
        _check_in_turns(table, figures["alternating"][tower])
        _check_narrow_cache_rows(table, figures["narrow_kv_cache"][tower], results["llava_qwen3 torch backend"])
        for beginning, names, ratio_of in DERIVED_RATIOS:
            row = _row(table, beginning)
            for name in names:
                _assert_ratio(row[COLUMNS[name]], ratio_of(results[name], bandwidth))


def test_pytorch_benchmark_reports_every_figure_for_both_implementations_the_backend_and_int8(tmp_path, monkeypatch):
    output = tmp_path / "figures.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "pytorch_inference.py"), "--quick"]
    # 12 tokens: the torch backend's decode rate is the difference of two requests' times (its 11 steps against 1),
    # which with 3 tokens a moment's jitter of the tiny model's requests once turned negative in CI.
    command += ["--new-tokens", "12", "--repeats", "1", "--workdir", str(tmp_path / "work"), "--json", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(output.read_text())
    assert math.isfinite(figures["copy_bandwidth_gb_s"]) and figures["copy_bandwidth_gb_s"] > 0
    assert set(figures["results"]) == {"CLIP ViT-B/32", "SigLIP-base-patch16-224"}
    for by_implementation in figures["results"].values():
        assert set(by_implementation) == set(EVERY_COLUMN)
        # INT8 weights are a quarter of fp32's bytes, except the norms and the input embedding table.
        assert by_implementation["llava_qwen3 INT8"]["weight_gb"] < by_implementation["llava_qwen3"]["weight_gb"]
        for name, measured in by_implementation.items():
            served = (
                {"backend_second_turn_recompute_s", "backend_second_turn_cached_s"} if name.endswith("INT8") else set()
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
            not_positive = {key: value for key, value in measured.items() if not (math.isfinite(value) and value > 0)}
            assert not not_positive, (name, not_positive)
    assert set(figures["alternating"]) == set(figures["narrow_kv_cache"]) == set(figures["results"])
    for narrow in figures["narrow_kv_cache"].values():
        assert "second_turn_reuse_s" not in narrow and 0 <= narrow["tokens_equal_to_exact_cache"] <= 1
        assert all(math.isfinite(value) and value > 0 for key, value in narrow.items() if key.endswith(("_s", "_gb")))
    for in_turns in figures["alternating"].values():  # --repeats 1: two pairs, one in each order
        lists = ("decode_ratios", "ttft_ratios", "backend_decode_ratios", "backend_ttft_ratios", "backend_decode_tok_s")
        assert {key: len(values) for key, values in in_turns.items()} == dict.fromkeys(lists, 2)
        assert all(math.isfinite(value) and value > 0 for values in in_turns.values() for value in values)
    assert "| decode, batch 1 |" in result.stdout and "| second turn reused vs recomputed |" in result.stdout
    assert "| INT8's second turn through the torch backend, prefix cache vs none |" in result.stdout
    assert "| peak memory after imports / load / batch 1 / batch 8 |" in result.stdout
    assert "| decode, batch 1, in turns in one process: median of 2 ratios (range) |" in result.stdout
    assert "| torch backend, in turns with both: decode vs built-in Llava (" in result.stdout
    assert "| torch backend, in turns with both: time to first token vs built-in Llava |" in result.stdout

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its neighbour full_size.py
    _check_tables(result.stdout, figures, importlib.import_module("pytorch_inference").ROWS)


def test_answer_growth_benchmark_reports_each_engines_growth_against_generate(tmp_path):
    output = tmp_path / "growth.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "answer_growth.py"), "--quick", "--json", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]

    figures = json.loads(output.read_text())
    results = figures["results"]
    assert set(results) == {"transformers generate", "torch backend", "onnx backend"}
    for name, measured in results.items():
        assert all(math.isfinite(value) and value > 0 for value in measured.values()), measured
        assert measured["growth"] == pytest.approx(measured["last_ms"] / measured["first_ms"])
        yardstick = results["transformers generate"]["growth"]
        assert measured["growth_vs_generate"] == pytest.approx(measured["growth"] / yardstick)
        printed = re.search(rf"^{name} +([0-9.]+) +([0-9.]+) +([0-9.]+)x +([0-9.]+)x$", result.stdout, flags=re.M)
        assert printed is not None, result.stdout
        _assert_ratio(printed.group(4) + "x", measured["growth_vs_generate"])


def test_onnx_benchmark_reports_every_engine_against_pytorch_and_its_floor(tmp_path):
    output = tmp_path / "onnx.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "onnx_generation.py"), "--quick", "--new-tokens", "6",
        "--repeats", "1", "--workdir", str(tmp_path / "work"), "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"^\[(\d)/8\] ", result.stdout, flags=re.M) == [str(index) for index in range(1, 9)]  # progress

    report = json.loads(output.read_text())
    engines = report["engines"]
    rows = {row[0]: row for row in _table_rows(result.stdout, "| engine | decoder weights")}
    assert set(engines) == set(rows) and len(engines) == 8
    bandwidth = report["bandwidth_bytes_per_s"]
    for engine, figures in engines.items():
        for key in ("ttft_s", "decode_tok_s", "batch_tok_s", "peak_rss_bytes", "imports_rss_bytes", "loaded_bytes"):
            assert math.isfinite(figures[key]) and figures[key] > 0, (engine, key)
        assert len(figures["tokens"]) == 6
        # The peak after batch 8 includes batch 1's; each stage's peak includes the imports'.
        assert figures["imports_rss_bytes"] < figures["peak_rss_batch1_bytes"] <= figures["peak_rss_bytes"]
        row = rows[engine]
        _assert_ratio(row[5], figures["decode_tok_s"] / engines["PyTorch fp32"]["decode_tok_s"])
        _assert_ratio(row[9], figures["batch_tok_s"] / figures["decode_tok_s"])
        _assert_ratio(row[13], figures["peak_rss_batch1_bytes"] / figures["loaded_bytes"])
        _assert_ratio(row[15], figures["peak_rss_bytes"] / figures["loaded_bytes"])
        floor = bandwidth / figures["decoder_bytes"]
        assert abs(_number(row[6]) / floor - 1) <= FIGURE_ROUNDING
    # The ONNX engines run without torch, as an export is deployed: their imports hold less than half of PyTorch's.
    imports = {engine: figures["imports_rss_bytes"] for engine, figures in engines.items()}
    assert max(imports[engine] for engine in engines if engine.startswith("ONNX")) < imports["PyTorch fp32"] / 2
    # fp32 through the torch backend's steps and on either decoder graph is PyTorch's own arithmetic: the same tokens.
    fp32 = ("PyTorch fp32, torch backend", "ONNX fp32, fused decoder", "ONNX fp32, merged decoder")
    assert [rows[engine][16] for engine in fp32] == ["first 6/6"] * 3


@pytest.mark.needs("llama.cpp")
def test_onnx_benchmark_runs_each_fused_decoder_in_turns_with_llama_cpp(tmp_path):
    output = tmp_path / "onnx.json"
    tools = Path(shutil.which("llama-server")).parent
    command = [
        sys.executable, str(ROOT / "benchmarks" / "onnx_generation.py"), "--quick", "--new-tokens", "6",
        "--repeats", "2", "--workdir", str(tmp_path / "work"), "--json", str(output), "--llama-cpp", str(tools),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"^\[(\d)/3\] ONNX .* and llama\.cpp ", result.stdout, flags=re.M) == ["1", "2", "3"]

    pairs = json.loads(output.read_text())["llama.cpp"]
    rows = {row[0]: row for row in _table_rows(result.stdout, "| ONNX, fused decoder")}
    assert set(pairs) == {"ONNX fp32, fused decoder", "ONNX INT8, fused decoder", "ONNX q4, fused decoder"}
    assert set(rows) == {"ONNX fp32", "ONNX INT8", "ONNX q4"}
    for engine, pair in pairs.items():
        assert len(pair["runs"]) == 2 and len(pair["tokens"]) == len(pair["llama_cpp_tokens"]) == 6
        for run in pair["runs"]:  # each ratio is of one pair of runs, seconds apart
            assert all(math.isfinite(value) and value > 0 for value in run.values()), run
            assert run["decode_ratio"] == pytest.approx(run["decode_tok_s"] / run["llama_cpp_decode_tok_s"])
            ours_prompt = pair["prompt_tokens"] / run["ttft_s"]
            theirs_prompt = pair["llama_cpp_prompt_tokens"] / run["llama_cpp_ttft_s"]
            assert run["prompt_ratio"] == pytest.approx(ours_prompt / theirs_prompt)
        row = rows[engine.split(",")[0]]
        assert pair["llama_cpp_files_bytes"] > pair["llama_cpp_file_bytes"] > 0  # the mmproj beside the model
        _assert_ratio(row[13], pair["llama_cpp_peak_rss_bytes"] / pair["llama_cpp_files_bytes"])
        for cell, key in ((row[10], "decode_ratio"), (row[11], "prompt_ratio")):
            values = [run[key] for run in pair["runs"]]
            printed = re.fullmatch(r"([0-9.]+)x \(([0-9.]+)-([0-9.]+)\)", cell).groups()
            for shown, value in zip(printed, (statistics.median(values), min(values), max(values)), strict=True):
                assert abs(float(shown) - value) <= RATIO_ROUNDING + 1e-9, (cell, values)
