"""vLLM's input side for LLaVA-Qwen3: which inputs a prompt takes and how many placeholder tokens each one fills.

vLLM tokenizes the prompt itself and asks the model's processor only for the tensors of the multimodal items. Here:
- images go through the checkpoint's own `LlavaQwen3Processor` (its CLIP/SigLIP image processor); each `<image>` in
  the prompt is replaced by as many image tokens as the processor's `placeholder_lengths` says (as is every embedding
  item's placeholder);
- each embedding modality of `config.modalities` (`m1`, ...) is a modality of its own: its items are precomputed
  vectors, `(dim,)` or `(n, dim)`, passed through to the model untouched, and each placeholder (`<m1>`) is replaced by
  n tokens. They reach vLLM through `LLM.generate(..., multi_modal_data={"m1": [...]})`; the OpenAI chat parser knows
  only images, audio and video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from transformers import BatchFeature, PretrainedConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalInput
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ModalityDataItems, MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    TimingContext,
)

from ..inference.records import load_embedding

IMAGE = "image"


def embeddings_field(modality: str) -> str:
    """The keyword under which a modality's vectors reach the model's `embed_multimodal`."""
    return f"{modality}_embeds"


class ModalityEmbeddingItems(ModalityDataItems[list[torch.Tensor], torch.Tensor]):
    """The items of one embedding modality: `(n, dim)` tensors that the model's projector for it maps into the
    language model, one placeholder token per vector."""

    def get_count(self) -> int:
        return len(self.data)

    def get(self, index: int) -> torch.Tensor:
        return self.data[index]

    def get_processor_data(self) -> Mapping[str, object]:
        return {}  # nothing for the HF processor to do: the vectors are the model's input

    def get_passthrough_data(self) -> Mapping[str, object]:
        return {embeddings_field(self.modality): self.data}


class LlavaQwen3DataParser(MultiModalDataParser):
    """Parses `multi_modal_data` with images and the checkpoint's embedding modalities (and nothing else).

    A modality's data is one item or a list of items; an item is a `(dim,)` vector (one token) or an `(n, dim)`
    sequence (n tokens) as a torch tensor, a numpy array, or a `.npy`/`.safetensors` file; a `(k, n, dim)` tensor is
    k items.
    """

    def __init__(self, modalities: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.modalities = dict(modalities)

    def _get_subparsers(self) -> Mapping[str, Any]:
        parsers = {IMAGE: self._parse_image_data}
        return parsers | {name: partial(self._parse_modality, name) for name in self.modalities}

    def _parse_image_data(self, data: Any) -> ModalityDataItems | None:
        if self.is_embeddings(data):
            raise ValueError(
                "LLaVA-Qwen3 takes images as pictures (PIL images or numpy arrays), not precomputed image embeddings; "
                "vLLM reads a 3-dimensional torch tensor (or a list of 2-dimensional ones) as embeddings."
            )
        return super()._parse_image_data(data)

    def _parse_modality(self, name: str, data: Any) -> ModalityEmbeddingItems | None:
        if data is None:
            return None
        if isinstance(data, (list, tuple)):
            raw_items = list(data)
        else:
            tensor = load_embedding(data)
            raw_items = list(tensor) if tensor.ndim == 3 else [tensor]
        if not raw_items:
            return None
        input_dim = self.modalities[name]["input_dim"]
        items = []
        for index, raw in enumerate(raw_items):
            item = load_embedding(raw)
            if item.ndim not in (1, 2) or item.shape[-1] != input_dim or not item.is_floating_point():
                raise ValueError(
                    f"modality {name!r} item {index} is a {item.dtype} tensor of shape {tuple(item.shape)}; expected "
                    f"floats of shape ({input_dim},) or (n, {input_dim})."
                )
            items.append(item.reshape(-1, input_dim))  # a vector is a sequence of one
        return ModalityEmbeddingItems(items, name)


class LlavaQwen3ProcessingInfo(BaseProcessingInfo):
    """What vLLM needs to know about the checkpoint's inputs."""

    def get_hf_config(self) -> PretrainedConfig:
        # Not checked against LlavaQwen3Config: with --trust-remote-code the config is the class copied next to the
        # weights, a different class object with the same fields.
        return self.ctx.get_hf_config()

    def get_data_parser(self) -> MultiModalDataParser:
        return LlavaQwen3DataParser(
            self.get_hf_config().modalities,
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return dict.fromkeys([IMAGE, *self.get_hf_config().modalities])  # None: any number per prompt

    def get_image_size(self) -> int:
        """The side of the square the image processor resizes every image to."""
        return self.get_hf_config().vision_config.image_size


class LlavaQwen3DummyInputsBuilder(BaseDummyInputsBuilder[LlavaQwen3ProcessingInfo]):
    """Inputs of the largest size for vLLM's memory profiling: white square images, zero vectors."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        text = self.info.get_hf_processor().image_token * mm_counts.get(IMAGE, 0)
        modalities = self.info.get_hf_config().modalities
        return text + "".join(spec["token"] * mm_counts.get(name, 0) for name, spec in modalities.items())

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions
    ) -> dict[str, Any]:
        size = self.info.get_image_size()
        data: dict[str, Any] = {
            IMAGE: self._get_dummy_images(
                width=size, height=size, num_images=mm_counts.get(IMAGE, 0), overrides=mm_options.get(IMAGE)
            )
        }
        for name, spec in self.info.get_hf_config().modalities.items():
            data[name] = [torch.zeros(1, spec["input_dim"])] * mm_counts.get(name, 0)
        return data


class LlavaQwen3MultiModalProcessor(BaseMultiModalProcessor[LlavaQwen3ProcessingInfo]):
    """Turns images into pixel values with the checkpoint's processor and expands every placeholder."""

    def apply(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> MultiModalInput:
        self._check_placeholder_counts(inputs.prompt, inputs.mm_data_items)
        return super().apply(inputs, timing_ctx)

    def _check_placeholder_counts(self, prompt: list[int], mm_items: MultiModalDataItems) -> None:
        """One placeholder per item, for every modality: vLLM itself catches items without a placeholder, but a
        placeholder without an item would silently stay a plain token."""
        config = self.info.get_hf_config()
        placeholders = {IMAGE: (config.image_token_id, self.info.get_hf_processor().image_token)}
        placeholders |= {name: (spec["token_id"], spec["token"]) for name, spec in config.modalities.items()}
        for modality, (token_id, token) in placeholders.items():
            found, given = prompt.count(token_id), mm_items.get_count(modality, strict=False)
            if found != given:
                raise ValueError(
                    f"The prompt holds {found} {token} placeholders but {given} {modality} items were given; write "
                    f"one {token} per item (vLLM expands it to the item's tokens)."
                )

    def _get_hf_mm_text(self, mm_counts: Mapping[str, int]) -> str:
        # vLLM hands the processor only the images; ours checks that its text holds one <image> per image.
        return self.info.get_hf_processor().image_token * mm_counts.get(IMAGE, 0)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = {"pixel_values": MultiModalFieldConfig.batched(IMAGE)}
        for name in self.info.get_hf_config().modalities:
            fields[embeddings_field(name)] = MultiModalFieldConfig.batched(name)
        return fields

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        config, processor = self.info.get_hf_config(), self.info.get_hf_processor()
        image_token_id = config.image_token_id
        image_length = processor.placeholder_lengths(num_images=1)[processor.image_token][0]
        updates = [
            PromptReplacement(modality=IMAGE, target=[image_token_id], replacement=[image_token_id] * image_length)
        ]
        for name, spec in config.modalities.items():
            replacement = partial(_modality_replacement, mm_items, processor, name, spec["token_id"])
            updates.append(PromptReplacement(modality=name, target=[spec["token_id"]], replacement=replacement))
        return updates


def _modality_replacement(
    mm_items: MultiModalDataItems, processor: Any, name: str, token_id: int, item_index: int
) -> list[int]:
    """The tokens that replace a modality's placeholder: as many as the processor says the item takes."""
    item = mm_items.get_items(name, ModalityEmbeddingItems).get(item_index)
    length = processor.placeholder_lengths(modality_embeds={name: [item]})[processor.modality_tokens[name]][0]
    return [token_id] * length
