"""One generation's decoding on each of an export's two decoder graphs (`onnx_layout`).

Both take the prompt's input embeddings and left-padded attention mask, compute the prompt, and then one position per
row at each `advance`; each gives the logits of every row's last position, `(batch, vocabulary)`.
"""

from __future__ import annotations

import numpy as np
import onnxruntime

from .onnx_layout import PAST, PRESENT, cache_names

# The fused decoder's cache starts with room for the prompt and all its new tokens up to this many positions, and
# doubles when full: preallocating room for a long `max_new_tokens` would hold 229 kB a position for Qwen3-0.6B
# whether the answer needs it or not.
FIRST_CACHE_ROOM = 256


class MergedGraphDecoding:
    """transformers.js' `decoder_model_merged`: the cache goes in and comes back as arrays at every step."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        num_layers: int,
        cache_row_shape: tuple[int, int],
        inputs_embeds: np.ndarray,
        attention_mask: np.ndarray,
    ) -> None:
        self.session, self.num_layers = session, num_layers
        empty = np.zeros((len(inputs_embeds), cache_row_shape[0], 0, cache_row_shape[1]), np.float32)
        self.past = [empty] * (2 * num_layers)
        self.attention_mask = attention_mask
        self.logits = self._run(inputs_embeds)

    def advance(self, inputs_embeds: np.ndarray) -> np.ndarray:
        """Logits after one more position per row, `inputs_embeds` `(batch, 1, hidden)`."""
        self.attention_mask = np.concatenate([self.attention_mask, np.ones_like(self.attention_mask[:, :1])], axis=1)
        self.logits = self._run(inputs_embeds)
        return self.logits

    def _run(self, inputs_embeds: np.ndarray) -> np.ndarray:
        # As transformers does: positions count the real tokens, so a left-padded row starts at 0.
        position_ids = np.cumsum(self.attention_mask, axis=-1) - 1
        position_ids[self.attention_mask == 0] = 1
        feed = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": self.attention_mask,
            "position_ids": position_ids[:, -inputs_embeds.shape[1] :],
        }
        feed.update(zip(cache_names(PAST, self.num_layers), self.past, strict=True))
        logits, *self.past = self.session.run(None, feed)
        return logits[:, -1].astype(np.float32)


class FusedGraphDecoding:
    """onnxruntime-genai's fused `decoder_fused`: one preallocated cache per layer, bound as both the graph's past
    and its present, so the graph writes each new position in place and nothing is copied between steps.

    The graph's GroupQueryAttention fills a row's cache from position 0 and reads how many positions each row holds
    from its attention mask's row sums, so each prompt row is computed alone, without its left padding, into its
    slice of the batch's cache; the rows then advance together, each at its own length.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        num_layers: int,
        cache_row_shape: tuple[int, int],
        inputs_embeds: np.ndarray,
        attention_mask: np.ndarray,
        max_new_tokens: int,
    ) -> None:
        self.session, self.num_layers, self.cache_row_shape = session, num_layers, cache_row_shape
        batch, length = attention_mask.shape
        self.lengths = attention_mask.sum(axis=1).astype(np.int64)
        # The last new token is never fed back, so the answer adds at most max_new_tokens - 1 positions.
        needed = length + max(max_new_tokens - 1, 1)
        self.cache = self._allocate(batch, min(needed, max(FIRST_CACHE_ROOM, length + 1)))
        self.logits = np.concatenate(
            [
                self._run(
                    self._bind_cache(slice(row, row + 1)),
                    inputs_embeds[row : row + 1, length - self.lengths[row] :],
                    self.lengths[row : row + 1],
                )
                for row in range(batch)
            ]
        )
        self.binding = self._bind_cache(slice(None))  # the whole batch's, kept for every step until the cache grows

    def advance(self, inputs_embeds: np.ndarray) -> np.ndarray:
        """Logits after one more position per row, `inputs_embeds` `(batch, 1, hidden)`."""
        self.lengths = self.lengths + 1
        room = self.cache[0].shape[2]
        if self.lengths.max() > room:
            grown = self._allocate(len(self.lengths), 2 * room)
            for old, new in zip(self.cache, grown, strict=True):
                new[:, :, :room] = old
            self.cache = grown
            self.binding = self._bind_cache(slice(None))
        self.logits = self._run(self.binding, inputs_embeds, self.lengths)
        return self.logits

    def _allocate(self, batch: int, room: int) -> list[np.ndarray]:
        heads, head_dim = self.cache_row_shape
        return [np.zeros((batch, heads, room, head_dim), np.float32) for _ in range(2 * self.num_layers)]

    def _bind_cache(self, rows: slice) -> onnxruntime.IOBinding:
        """A binding of `rows` of the cache as both the graph's past and its present, and of the logits."""
        binding = self.session.io_binding()
        for past, present, layer_cache in zip(
            cache_names(PAST, self.num_layers), cache_names(PRESENT, self.num_layers), self.cache, strict=True
        ):
            shared = onnxruntime.OrtValue.ortvalue_from_numpy(layer_cache[rows])  # a view: the graph writes in place
            binding.bind_ortvalue_input(past, shared)
            binding.bind_ortvalue_output(present, shared)
        binding.bind_output("logits")
        return binding

    def _run(self, binding: onnxruntime.IOBinding, inputs_embeds: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Runs the rows `binding` holds; `lengths` counts each row's positions after this step."""
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        binding.bind_cpu_input("attention_mask", (np.arange(lengths.max()) < lengths[:, None]).astype(np.int64))
        self.session.run_with_iobinding(binding)
        logits = binding.get_outputs()[-1].numpy()  # outputs in binding order: the cache first, logits last
        return logits[:, -1].astype(np.float32)
