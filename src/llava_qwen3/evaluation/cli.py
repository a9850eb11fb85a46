"""Evaluate a checkpoint or an ONNX export on a record file or `datasets` folder.

    llava-qwen3-eval MODEL DATA [--backend torch|onnx] [--variant quantized|fp32|...] [--quantize int8] [--output DIR]
                     [--task auto|vqa|caption] [--batch-size 8] [--max-new-tokens 32] [--on-bad-record skip|error]
                     [--image-folder DIR] [--image-column image] [--limit N] [--device cpu|cuda] [--threads N]

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

from ..commands import exit_on_error
from ..eval_results import EVAL_FOLDER
from ..inference import load_backend
from ..inference.loading import add_backend_arguments, backend_options
from ..record_sources import ON_BAD_RECORD
from .captioning import JavaMissingError
from .data import TASKS
from .run import evaluate


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
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="checkpoint folder or repo id (torch), or ONNX export folder (onnx)")
    parser.add_argument("data", help="JSON / JSON-lines record file, or a datasets save_to_disk folder")
    add_backend_arguments(parser)
    parser.add_argument("--output", type=Path, help="run folder (default: MODEL/eval/<data>-<backend>[-<variant>])")
    parser.add_argument("--task", choices=TASKS, default="auto", help="how records are scored (default: by form)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--on-bad-record", choices=ON_BAD_RECORD, default="skip")
    parser.add_argument("--image-folder", help="folder image paths are relative to (default: the data's folder)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--limit", type=int, help="evaluate the first N usable records only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_error(parser, (JavaMissingError,)):
        options = backend_options(args)
        # The run is named by its ONNX graphs, or by the torch backend's quantization.
        variant = (args.variant or _default_onnx_variant()) if args.backend == "onnx" else args.quantize
        output = args.output or default_output(args.model, args.data, args.backend, variant)
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
    print(report.markdown())
    for message in report.skipped:
        print(f"left out: {message}")
    print(f"predictions, scores and table in {report.output}")


if __name__ == "__main__":
    main()
