"""The Qwen3 language model's forward pass for the torch backend's generation on CPU, outside transformers' modules.

Why: on a CPU a decoding step of Qwen3-0.6B reads its 2.4 GB of weights, which takes 82-92 ms at memory speed, and
transformers' modules add about 60 small operators a layer around those products, 20-28 ms of a 111 ms step
(docs/performance.md). These steps compute the same function with fewer operators and with the matrix-product library
that is faster on the CPU at hand:

- the modules' own weights, read in place (nothing copied, so a memory-mapped checkpoint stays the only copy);
- the query/key/value outputs side by side, so that one norm and one rotation serve the query and key heads;
- the residual additions inside the output and down products (`addmm`) where PyTorch's BLAS computes them;
- on x86 CPUs other than Intel's, every product through oneDNN (`PRODUCTS_THROUGH_ONEDNN`);
- a cache preallocated for the batch's prompt and answer, written in place, attended through
  `scaled_dot_product_attention` on its filled part (grouped-query heads read in place), optionally kept in a
  narrower dtype than the weights (`cache_dtype`: half the memory in bfloat16 or float16), each layer's part widened
  for attention (on CPU attention in bfloat16 itself took 5-6x fp32's time, widening and fp32 attention 1.0-2.1x);
- the rotary tables from the model's own rotary embedding, computed once a step for every layer.

Anything else (a layer that is not a plain `nn.Linear`, e.g. INT8 or a LoRA adapter) is called as its module.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Projection = Callable[[torch.Tensor], torch.Tensor]
ResidualProjection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def unsupported_reason(text_config, device: torch.device) -> str | None:
    """Why these steps cannot run a model with this text config on this device, or None where they can."""
    if device.type != "cpu":
        return f"the model is on {device.type}; the steps are for CPU, where transformers' per-operator cost shows"
    if text_config.model_type != "qwen3":
        return f"the language model is {text_config.model_type!r}, not 'qwen3'"
    if any(kind != "full_attention" for kind in getattr(text_config, "layer_types", None) or ()):
        return "the language model has sliding-window layers"
    return None


@dataclass
class StepCache:
    """Keys and values of every layer, `(layers, batch, kv_heads, room, head_dim)`, filled up to `length`;
    `key_mask[row, position]` is False at a row's left padding (None where no row is padded)."""

    keys: torch.Tensor
    values: torch.Tensor
    key_mask: torch.Tensor | None
    length: int = 0

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's filled keys and values, `(batch, kv_heads, length, head_dim)` views."""
        return [
            (self.keys[index, :, :, : self.length], self.values[index, :, :, : self.length])
            for index in range(len(self.keys))
        ]


class Qwen3Steps:
    """Runs `language_model` (transformers' `Qwen3Model`) and `head` over a `StepCache`; see the module docstring.
    `through_onednn` picks the matrix-product library (default: `PRODUCTS_THROUGH_ONEDNN`, the faster one here);
    `cache_dtype` the dtype of the cache's keys and values (default: the weights')."""

    def __init__(
        self,
        language_model: nn.Module,
        head: nn.Module,
        through_onednn: bool | None = None,
        cache_dtype: torch.dtype | None = None,
    ) -> None:
        onednn = PRODUCTS_THROUGH_ONEDNN if through_onednn is None else through_onednn
        config = language_model.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.rotary_embedding = language_model.rotary_emb
        self.final_norm = _norm(language_model.norm)
        self.cache_dtype = cache_dtype or self.final_norm[0].dtype
        self.head = _product_of(head, onednn)
        self.layers = []
        for layer in language_model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    _norm(layer.input_layernorm),
                    _side_by_side([attention.q_proj, attention.k_proj, attention.v_proj], onednn),
                    self._query_key_norm(attention.q_norm, attention.k_norm),
                    attention.scaling,
                    _with_residual(attention.o_proj, onednn),
                    _norm(layer.post_attention_layernorm),
                    _product_of(mlp.gate_proj, onednn),
                    _product_of(mlp.up_proj, onednn),
                    mlp.act_fn,
                    _with_residual(mlp.down_proj, onednn),
                )
            )

    def _query_key_norm(self, query_norm: nn.Module, key_norm: nn.Module) -> tuple[torch.Tensor, float]:
        """The query and key heads lie side by side in the projections' output, so one norm over both does both: each
        head's own weight (the query norm's for the first `num_heads`, the key norm's for the rest)."""
        if query_norm.variance_epsilon != key_norm.variance_epsilon:
            raise ValueError("the query and key norms of a Qwen3 layer have different epsilons.")
        weight = torch.cat(
            [query_norm.weight.expand(self.num_heads, -1), key_norm.weight.expand(self.num_kv_heads, -1)]
        )
        return weight, query_norm.variance_epsilon

    def new_cache(self, attention_mask: torch.Tensor, room: int) -> StepCache:
        """An empty cache for a left-padded batch (`attention_mask` over its prompts) with room for `room` positions.
        Positions are written before they are read, so the buffers are left unset."""
        batch, prompt_length = attention_mask.shape
        reference = self.final_norm[0]
        shape = (len(self.layers), batch, self.num_kv_heads, room, self.head_dim)
        keys = torch.empty(shape, dtype=self.cache_dtype, device=reference.device)
        key_mask = None
        if not bool(attention_mask.all()):
            key_mask = torch.ones(batch, room, dtype=torch.bool, device=reference.device)
            key_mask[:, :prompt_length] = attention_mask.bool()
        return StepCache(keys, torch.empty_like(keys), key_mask)

    def fill(self, cache: StepCache, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copies an earlier computation's keys and values (`(batch, kv_heads, length, head_dim)` a layer) into the
        beginning of `cache`."""
        length = layers[0][0].shape[2]
        for index, (keys, values) in enumerate(layers):
            cache.keys[index, :, :, :length] = keys
            cache.values[index, :, :, :length] = values
        cache.length = length

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache: StepCache) -> torch.Tensor:
        """The next-token logits `(batch, vocab)` after `embeds` (`(batch, new, hidden)`, at `positions`
        `(batch, new)`), whose keys and values go into `cache` after what it holds."""
        batch, new, hidden_size = embeds.shape
        start, end = cache.length, cache.length + new
        if end > cache.keys.shape[3]:
            raise ValueError(f"the cache has room for {cache.keys.shape[3]} positions, not {end}.")
        cos, sin = self.rotary_embedding(embeds, positions)
        half = cos.shape[-1] // 2
        # Rotating half of each head, x * cos + cat(-x2, x1) * sin, as x * cos + roll(x) * cat(-sin1, sin2).
        cos, signed_sin = cos[:, :, None], torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)[:, :, None]
        mask = self._attention_mask(cache, start, end)
        heads, kv_heads, head_dim = self.num_heads, self.num_kv_heads, self.head_dim
        hidden = embeds.reshape(batch * new, hidden_size)
        for index, layer in enumerate(self.layers):
            input_norm, qkv, query_key_norm, scale, output, post_norm, gate, up, activation, down = layer
            projected = qkv(_rms_norm(hidden, *input_norm)).reshape(batch, new, heads + 2 * kv_heads, head_dim)
            normed = _rms_norm(projected[:, :, : heads + kv_heads], *query_key_norm)
            rotated = (normed * cos).add_(normed.roll(half, dims=-1).mul_(signed_sin))
            cache.keys[index, :, :, start:end] = rotated[:, :, heads:].transpose(1, 2)
            cache.values[index, :, :, start:end] = projected[:, :, heads + kv_heads :].transpose(1, 2)
            attended = F.scaled_dot_product_attention(
                rotated[:, :, :heads].transpose(1, 2),
                cache.keys[index, :, :, :end].to(rotated.dtype),
                cache.values[index, :, :, :end].to(rotated.dtype),
                attn_mask=mask,
                is_causal=mask is None and new > 1,
                scale=scale,
                enable_gqa=True,
            )
            hidden = output(hidden, attended.transpose(1, 2).reshape(batch * new, heads * head_dim))
            normed_hidden = _rms_norm(hidden, *post_norm)
            hidden = down(hidden, activation(gate(normed_hidden)).mul_(up(normed_hidden)))
        cache.length = end
        last = hidden.view(batch, new, hidden_size)[:, -1]
        return self.head(_rms_norm(last, *self.final_norm))

    @staticmethod
    def _attention_mask(cache: StepCache, start: int, end: int) -> torch.Tensor | None:
        """Which cached positions each new one attends to, `(batch, 1, new, end)`; None where plain causal attention
        from the first position is exact (no padding, nothing cached before)."""
        new = end - start
        if cache.key_mask is None and (start == 0 or new == 1):
            return None
        device = cache.keys.device
        query_positions = torch.arange(start, end, device=device)[:, None]
        key_positions = torch.arange(end, device=device)[None]
        allowed = key_positions <= query_positions
        if cache.key_mask is not None:
            # A padding position attends to itself only, so that its (never read) keys stay finite.
            allowed = (allowed & cache.key_mask[:, None, :end]) | (key_positions == query_positions)
        return allowed[:, None] if allowed.dim() == 3 else allowed[None, None]


def _norm(module: nn.Module) -> tuple[torch.Tensor, float]:
    return module.weight, module.variance_epsilon


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Qwen3's RMSNorm, operation for operation (in float32, then back to the input's dtype)."""
    as_float = hidden.float()
    normed = as_float * torch.rsqrt(as_float.pow(2).mean(-1, keepdim=True) + epsilon)
    return weight * normed.to(hidden.dtype)


def onednn_is_faster(cpuinfo: str | None, machine: str) -> bool:
    """Whether oneDNN computes fp32 matrix products faster than PyTorch's BLAS on a machine with this `/proc/cpuinfo`
    text (None where there is none) and `platform.machine()`. On x86, PyTorch's BLAS is Intel's MKL, which runs its
    fast kernels on Intel's CPUs only; oneDNN picks its kernels by instruction set. On an AMD EPYC (Zen 4, AVX-512)
    oneDNN reads a weight 1.6-1.8x faster at 1-8 rows and computes 1.3-1.8x faster at 64 (docs/performance.md); on
    Intel's CPUs MKL's own forms below were measured at memory speed. Only Linux on x86 is measured; elsewhere
    PyTorch's BLAS."""
    if machine != "x86_64" or cpuinfo is None or not torch.backends.mkldnn.is_available():
        return False
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, re.M)
    return vendor is not None and vendor.group(1) != "GenuineIntel" and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _cpuinfo() -> str | None:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else None


PRODUCTS_THROUGH_ONEDNN = onednn_is_faster(_cpuinfo(), platform.machine())

# Row counts at which MKL's sgemm reads a weight faster as `W @ x.T` than as `x @ W.T` (F.linear): on the benchmark's
# Xeon 1.3-1.8x faster from 8 to 32 rows; at 1-4 rows F.linear's path is as fast or faster (2 rows: 2x faster), from
# about 64 rows the two are equal (docs/performance.md). So a decoding batch of 8-32 rows takes the other form.
FEW_ROWS = range(8, 33)


def _product(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> torch.Tensor:
    """`F.linear(states, weight, bias)` for 2-D `states`: through oneDNN (on the weight as it is, nothing reordered
    or copied), or through PyTorch's BLAS in the faster form for its row count."""
    if onednn:
        return torch.ops.mkldnn._linear_pointwise(states, weight, bias, "none", [], "")
    if states.shape[0] in FEW_ROWS:
        product = torch.mm(weight, states.t()).t()
        return product if bias is None else product + bias
    return F.linear(states, weight, bias)


def _product_of(linear: nn.Module, onednn: bool) -> Projection:
    """A module's product: a plain `nn.Linear` through `_product`, anything else (INT8, adapters) as its module."""
    if type(linear) is nn.Linear:
        weight, bias = linear.weight, linear.bias
        return lambda states: _product(states, weight, bias, onednn)
    return linear


def _side_by_side(linears: list[nn.Module], onednn: bool) -> Projection:
    """Several projections of the same input, their outputs side by side in one tensor. Each reads its module's own
    weight: a weight concatenated once would make the step 4% faster but hold a second copy of two thirds of the
    language model, since a memory-mapped checkpoint's pages stay resident once read (docs/performance.md)."""
    products = [_product_of(linear, onednn) for linear in linears]
    return lambda states: torch.cat([product(states) for product in products], dim=-1)


def _with_residual(linear: nn.Module, onednn: bool) -> ResidualProjection:
    """`residual + linear(states)`: for a plain `nn.Linear` without bias through PyTorch's BLAS in one `addmm` (unless
    `FEW_ROWS`)."""
    if type(linear) is nn.Linear and linear.bias is None and not onednn:
        weight = linear.weight

        def add_product(residual: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            if states.shape[0] in FEW_ROWS:
                return residual + _product(states, weight, None, onednn=False)
            return torch.addmm(residual, states, weight.t())

        return add_product
    product = _product_of(linear, onednn)
    return lambda residual, states: residual + product(states)
