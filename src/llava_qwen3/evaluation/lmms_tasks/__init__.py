"""lmms-eval tasks defined in this package; pass `TASKS_DIR` to lmms-eval's `--include_path`.

`llava_qwen3_shapes` asks colour, shape and count questions about synthetic pictures (`shapes.write_task_data`
writes them into `llava_qwen3_shapes_data/`; lmms-eval reads that folder from its working directory) and scores the
answers with this package's VQA accuracy, so the harness and `llava-qwen3-eval` give the same numbers on the same data.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
