"""llama.cpp as the yardstick of the ONNX decoders: the same Qwen3 weights written to GGUF, quantised with
llama-quantize and timed with llama-bench, from a llama.cpp source tree whose tools are built.

The source tree can be the one inside the llama-cpp-python source distribution (`vendor/llama.cpp`); build its tools
with `cmake -B build -DLLAMA_CURL=OFF && cmake --build build -j 2 --target llama-bench llama-quantize`. The weights
are random, so the GGUF carries no vocabulary (llama.cpp's "none" tokenizer with the model's vocabulary size):
llama-bench times random tokens and needs none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import Qwen3ForCausalLM

from llava_qwen3 import LlavaQwen3ForConditionalGeneration

# llama.cpp's name of each quantisation, by the ONNX variant it is measured against.
GGUF_TYPES = {"fp32": "F32", "quantized": "Q8_0", "q4": "Q4_K_M"}


def built_tools(source: Path) -> tuple[Path, Path]:
    """llama-bench and llama-quantize of the llama.cpp tree `source`, or a FileNotFoundError saying how to build
    them."""
    if not (source / "convert_hf_to_gguf.py").is_file():
        raise FileNotFoundError(f"{source} is not a llama.cpp source tree: it has no convert_hf_to_gguf.py.")
    paths = []
    for name in ("llama-bench", "llama-quantize"):
        found = [source / folder / name for folder in ("build/bin", "build") if (source / folder / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f"{source} has no built {name}; build it with `cmake -B build -DLLAMA_CURL=OFF && "
                f"cmake --build build -j 2 --target llama-bench llama-quantize` in {source}."
            )
        paths.append(found[0])
    return paths[0], paths[1]


def write_f32_gguf(model: LlavaQwen3ForConditionalGeneration, folder: Path, source: Path) -> Path:
    """Writes the language model of `model` as a Hugging Face Qwen3 folder and converts that with llama.cpp's own
    converter."""
    with torch.device("meta"):  # the modules are replaced by the model's own: no second copy of the weights
        language_model = Qwen3ForCausalLM(model.config.text_config)
    language_model.model = model.model.language_model
    language_model.lm_head = model.lm_head
    hf_folder = folder / "qwen3-hf"
    language_model.save_pretrained(hf_folder)
    sys.path[:0] = [str(source), str(source / "gguf-py")]
    import gguf
    from conversion.qwen import Qwen3Model

    class Qwen3WithoutVocabulary(Qwen3Model):
        model_arch = Qwen3Model.model_arch

        def set_vocab(self) -> None:
            self._set_vocab_none()
            self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])

    target = folder / "qwen3-f32.gguf"
    Qwen3WithoutVocabulary(hf_folder, gguf.LlamaFileType.ALL_F32, target).write()
    return target


def decode_rates(
    model: LlavaQwen3ForConditionalGeneration,
    workdir: Path,
    source: Path,
    prompt_tokens: int,
    new_tokens: int,
    repeats: int,
    threads: int,
) -> dict[str, float]:
    """llama.cpp's decode tokens/s on the language model of `model` for each quantisation in `GGUF_TYPES`, keyed by
    the ONNX variant's name: `new_tokens` generated after a context of `prompt_tokens`, as the runner does."""
    bench, quantize = built_tools(source)
    folder = workdir / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    f32 = folder / "qwen3-f32.gguf"
    if not f32.is_file():
        f32 = write_f32_gguf(model, folder, source)
    files = {}
    for variant, gguf_type in GGUF_TYPES.items():
        path = folder / f"qwen3-{gguf_type.lower()}.gguf"
        if not path.is_file():
            subprocess.run([quantize, f32, path, gguf_type], check=True, capture_output=True)
        files[variant] = path
    rates = {}
    for variant, path in files.items():
        command = [bench, "-m", path, "-t", threads, "-p", 0, "-n", new_tokens, "-d", prompt_tokens]
        command += ["-r", repeats, "-o", "json"]
        result = subprocess.run(list(map(str, command)), check=True, capture_output=True, text=True)
        (test,) = json.loads(result.stdout)
        rates[variant] = test["avg_ts"]
    return rates
