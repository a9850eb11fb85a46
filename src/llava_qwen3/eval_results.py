"""Where a checkpoint folder keeps its evaluation runs: `llava-qwen3-eval` writes each run's table there and the
model card (`hub.model_card`) shows them. Neither side imports the other; both take the layout from here."""

from __future__ import annotations

from pathlib import Path

EVAL_FOLDER = "eval"  # MODEL/eval/<run>/: one folder per evaluation run
TABLE_FILE = "results.md"  # a run's metrics as a Markdown table


def eval_tables(checkpoint: Path) -> list[Path]:
    """The tables of the evaluation runs kept in `checkpoint`, in name order."""
    return sorted((checkpoint / EVAL_FOLDER).glob(f"*/{TABLE_FILE}"))
