"""INT8 weights for the PyTorch model on CPU: every linear layer's weights become 8-bit with PyTorch's own dynamic
quantization (fbgemm / oneDNN kernels; activations are quantized per call, at 7 bits so AVX2 CPUs without VNNI do
not saturate).

Why this and not torchao or optimum-quanto: measured on the benchmark machine (2-core AVX2, no VNNI) over 100
Qwen3-0.6B-sized GEMVs (1x1024 by 1024x3072), fp32 took 65 ms, torchao 0.18's int8 weight-only 164 ms and its
dynamic int8 137 ms, optimum-quanto's qint8 weights 827 ms (126 ms with int8 activations), and PyTorch's dynamic
quantization 15 ms. The quantized model lives in memory only: it is a load option, not a checkpoint format.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# What the torch backend can quantize a model to when it loads it (`load_backend(..., quantize=...)`, `--quantize`).
# The commands offer the choice where torch is not installed, so torch is imported only to quantize.
QUANTIZATIONS = ("int8",)


def quantize_linear_layers_int8(model: nn.Module) -> nn.Module:
    """Replaces every `nn.Linear` of `model` (on CPU, fp32) by an INT8 one, in place; returns `model`."""
    import torch

    first = next(model.parameters())
    if first.device.type != "cpu" or first.dtype != torch.float32:
        raise ValueError(
            f"INT8 quantization runs on a CPU model in float32; this one is on {first.device.type} in {first.dtype}. "
            "Load it with device='cpu' and dtype=torch.float32 (or without quantize='int8' on a GPU)."
        )
    with warnings.catch_warnings():
        # torch.ao's eager API prints a migration notice to torchao, whose int8 kernels are slower on this CPU class.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
