"""lmms-eval runs the demo model through the registered `llava_qwen3` wrapper on the repo's local task, and scores it
as the eval command does; this package's VQA accuracy equals lmms-eval's VQAv2 scoring."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from llava_qwen3.evaluation import evaluate, normalize_answer, vqa_accuracy
from llava_qwen3.evaluation.lmms_tasks import TASKS_DIR
from llava_qwen3.evaluation.lmms_tasks.shapes import write_task_data
from llava_qwen3.inference import load_backend

# one_line: evaluation drives the inference backends only.
pytestmark = [pytest.mark.slow, pytest.mark.one_line, pytest.mark.needs("lmms-eval")]


def test_lmms_eval_runs_the_local_task_and_scores_as_the_eval_command(demo_model, tmp_path):
    folder = demo_model[0]
    split_folder = write_task_data(tmp_path)  # lmms-eval reads it from its working directory
    command = [
        *(sys.executable, "-m", "lmms_eval", "eval", "--model", "llava_qwen3"),
        *("--model_args", f"pretrained={folder}", "--tasks", "llava_qwen3_shapes"),
        *("--include_path", str(TASKS_DIR), "--batch_size", "8", "--output_path", str(tmp_path / "lmms")),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    results_files = list((tmp_path / "lmms").rglob("*_results.json"))
    # lmms-eval exits 0 after logging an error, so the results file is the proof that it ran.
    assert result.returncode == 0 and len(results_files) == 1, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (results_file,) = results_files
    harness = json.loads(results_file.read_text())["results"]["llava_qwen3_shapes"]["accuracy,none"]

    report = evaluate(load_backend(folder), split_folder, tmp_path / "eval", batch_size=8, progress=False)
    print(f"lmms-eval: {harness}, llava-qwen3-eval: {report.metrics}")
    assert report.records == report.scored == 180
    assert harness == pytest.approx(report.metrics["accuracy"], abs=1e-12)


def test_vqa_accuracy_equals_lmms_evals_vqav2_scoring():
    from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results

    processor = EvalAIAnswerProcessor()
    spellings = [
        *("2", "two", "Two.", "2 ", "none", "0", "a dog", "the dog", "Dog!", "dogs", "dont", "don't", "yes", "Yes!"),
        *("1,000", "1000", "3.5", "black/white", "black and white", "black-white", "it's", "its", "isnt", "(red)"),
        *("red; blue", "red blue", "man's hat", "Mans hat", "an apple", "apple."),
    ]
    rng = random.Random(0)
    for _ in range(300):
        answers = [rng.choice(spellings) for _ in range(10)]
        prediction = rng.choice(spellings)
        doc = {"question_id": 1, "answers": [{"answer": text, "answer_id": n} for n, text in enumerate(answers)]}
        official = vqav2_process_results(doc, [prediction])["exact_match"]
        assert vqa_accuracy(prediction, answers) == pytest.approx(official, abs=1e-12), (prediction, answers)
    for text in spellings:
        expected = processor.process_digit_article(processor.process_punctuation(text.strip()))
        assert normalize_answer(text) == expected, text
