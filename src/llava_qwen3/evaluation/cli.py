"""Evaluate a checkpoint or an ONNX export on a record file or `datasets` folder.

    llava-qwen3-eval MODEL DATA [--backend torch|onnx] [--variant quantized|fp32|...] [--quantize int8] [--output DIR]
                     [--task auto|vqa|caption] [--batch-size 8] [--max-new-tokens 32] [--on-bad-record skip|error]
                     [--image-folder DIR] [--image-column image] [--limit N] [--device cpu|cuda]

Questions are scored with VQA accuracy (per question type where records name one), captions with BLEU-1..4, METEOR,
ROUGE-L and CIDEr-D. Predictions are saved as they are made, so rerunning the same command resumes an interrupted
run. The output folder (default: MODEL/eval/<data>-<backend>[-<variant or quantize>] for a local MODEL) receives
predictions.json, scores.json and results.md; `llava-qwen3-push` puts the results.md tables of MODEL/eval/ in the
model card.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..inference import BACKENDS, QUANTIZATIONS, load_backend
from ..record_sources import ON_BAD_RECORD
from .captioning import JavaMissingError
from .data import TASKS
from .run import EVAL_FOLDER, evaluate


def default_output(model: str, data: str, backend: str, variant: str | None) -> Path:
    """MODEL/eval/<data name>-<backend>[-<variant>] for a local MODEL folder, else ./eval/<same>."""
    name = "-".join(part for part in (Path(data).stem, backend, variant) if part)
    base = Path(model) if Path(model).is_dir() else Path.cwd()
    return base / EVAL_FOLDER / name


def _default_onnx_variant() -> str:
    from ..inference.onnx_backend import DEFAULT_VARIANT  # needs onnxruntime, so only for the onnx backend

    return DEFAULT_VARIANT


def main(argv: list[str] | None = None) -> None:
    """Command line of `evaluate`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder or repo id (torch), or ONNX export folder (onnx)")
    parser.add_argument("data", help="JSON / JSON-lines record file, or a datasets save_to_disk folder")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--variant", help="ONNX graphs to run (default quantized: INT8; fp32, q4, ...)")
    parser.add_argument("--output", type=Path, help="run folder (default: MODEL/eval/<data>-<backend>[-<variant>])")
    parser.add_argument("--task", choices=TASKS, default="auto", help="how records are scored (default: by form)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--on-bad-record", choices=ON_BAD_RECORD, default="skip")
    parser.add_argument("--image-folder", help="folder image paths are relative to (default: the data's folder)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--limit", type=int, help="evaluate the first N usable records only")
    parser.add_argument("--device", help="torch backend: cpu, cuda, ... (default: CUDA where present)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="torch backend on CPU: INT8 linear layers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.backend == "torch" and args.variant:
        parser.error("--variant picks ONNX graphs; it needs --backend onnx.")
    if args.backend == "onnx" and args.quantize:
        parser.error("--quantize is for the torch backend; the onnx backend picks INT8 graphs with --variant.")
    if args.backend == "onnx":
        variant = args.variant or _default_onnx_variant()
        options = {"variant": variant}
    else:
        variant = args.quantize  # names the run like an ONNX variant does
        options = {"device": args.device, "quantize": args.quantize}
    output = args.output or default_output(args.model, args.data, args.backend, variant)
    try:
        backend = load_backend(args.model, args.backend, **options)
        report = evaluate(
            backend,
            args.data,
            output,
            model=args.model,
            variant=variant,
            task=args.task,
            image_folder=args.image_folder,
            image_column=args.image_column,
            on_bad_record=args.on_bad_record,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
        )
    except (ValueError, OSError, JavaMissingError) as error:
        parser.exit(2, f"llava-qwen3-eval: error: {error}\n")
    print(report.markdown())
    for message in report.skipped:
        print(f"left out: {message}")
    print(f"predictions, scores and table in {report.output}")


if __name__ == "__main__":
    main()
