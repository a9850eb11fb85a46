"""llama.cpp as the yardstick: the benchmark's model exported with `llava-qwen3-export-gguf` (language model and
mmproj) at f32, q8_0 and Q4_K_M, and timed in llama-server with the same picture and prompt as the package's engines.

The executables come from scripts/build_llama_cpp.sh (pass the folder it prints). Time to first token is the server's
own prompt time (the picture encoded and the prompt processed: the first token is sampled from its last logits);
decode is the server's tokens per second over the generated tokens after the first. The benchmark runs the server
in turns with the ONNX variant it rivals (onnx_generation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llava_qwen3 import LlavaQwen3ForConditionalGeneration, LlavaQwen3Processor
from llava_qwen3.conversion.export_gguf import GgufExport, export_gguf
from llava_qwen3.conversion.llama_cpp import LlamaServer, find_executable
from llava_qwen3.processing import IMAGE_TOKEN

# The GGUF type measured against each ONNX variant.
GGUF_TYPES = {"fp32": "f32", "quantized": "q8_0", "q4": "q4_k_m"}


@dataclass(frozen=True)
class LlamaCppRun:
    """One completion's figures, as llama-server reports them."""

    ttft_s: float
    prompt_tokens: int  # as llama-server counts them: the picture's positions and the text's
    decode_tok_s: float
    tokens: list[int]


def check_tools(folder: Path) -> None:
    """Fails before the long runs when llama.cpp's executables are not in `folder`."""
    for name in ("llama-server", "llama-quantize"):
        find_executable(name, folder)


def export_variants(
    model: LlavaQwen3ForConditionalGeneration, processor: LlavaQwen3Processor, workdir: Path, tools: Path
) -> dict[str, GgufExport]:
    """The model saved as a checkpoint and exported once per GGUF type (reused from `workdir` when there)."""
    checkpoint = workdir / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        model.save_pretrained(checkpoint)
        processor.save_pretrained(checkpoint)
    exports = {}
    for variant, outtype in GGUF_TYPES.items():
        folder = workdir / f"gguf-{outtype}"
        if folder.is_dir():  # an earlier run's export
            (projector,) = folder.glob("mmproj-*.gguf")
            (language_model,) = set(folder.glob("*.gguf")) - {projector}
            exports[variant] = GgufExport(folder, language_model, projector, folder / "Modelfile", ())
        else:
            exports[variant] = export_gguf(checkpoint, folder, outtype, tools)
    return exports


def llama_cpp_run(server: LlamaServer, prompt: str, image: Image.Image, new_tokens: int) -> LlamaCppRun:
    """One greedy completion of `new_tokens` tokens, timed by the server itself."""
    response = server.complete(prompt, [image], IMAGE_TOKEN, new_tokens)
    timings = response["timings"]
    return LlamaCppRun(
        ttft_s=timings["prompt_ms"] / 1000,
        prompt_tokens=timings["prompt_n"],
        decode_tok_s=timings["predicted_per_second"],
        tokens=response["tokens"],
    )
