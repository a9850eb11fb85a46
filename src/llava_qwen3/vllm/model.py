"""LLaVA-Qwen3 as a vLLM model: vLLM's CLIP/SigLIP tower and Qwen3, with the projectors written in vLLM's layers.

The data flow is the transformers model's: pixel values -> tower hidden states at `vision_feature_layer` (CLS dropped
where the tower has one and the strategy is "default") -> projector -> written over the `<image>` tokens; a modality's
vectors -> its projector -> written over its placeholder tokens. vLLM does the writing (`embed_input_ids`, the
`SupportsMultiModal` default) at the positions its processor marked (see processing.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any

import torch
from torch import nn
from transformers import PretrainedConfig
from vllm.config import VllmConfig
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    get_layer_index,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from ..modeling.configuration_llava_qwen3 import checked_projector_type
from ..processing import IMAGE_TOKEN
from .processing import (
    IMAGE,
    LlavaQwen3DummyInputsBuilder,
    LlavaQwen3MultiModalProcessor,
    LlavaQwen3ProcessingInfo,
    embeddings_field,
)

VISION_TOWERS = {"clip_vision_model": CLIPVisionModel, "siglip_vision_model": SiglipVisionModel}

# Checkpoint names (transformers' layout) -> this module's names. transformers 5 saves the tower without the
# `vision_model.` level that vLLM's towers (and transformers 4.x) have; the regex puts it back, and 4.x checkpoints,
# which have it, go through the plain prefix rule.
CHECKPOINT_TO_VLLM = WeightsMapper(
    orig_to_new_regex={re.compile(r"^model\.vision_tower\.(?!vision_model\.)"): "vision_tower.vision_model."},
    orig_to_new_prefix={
        "model.vision_tower.": "vision_tower.",
        "model.multi_modal_projector.": "multi_modal_projector.",
        "model.modality_projectors.": "modality_projectors.",
        "model.language_model.": "language_model.model.",
        "lm_head.": "language_model.lm_head.",
    },
)


class LlavaQwen3PixelInputs(TensorSchema):
    """Dimensions:
    - bn: number of images
    - h, w: the tower's input size (the image processor resizes every image to it)
    """

    pixel_values: Annotated[torch.Tensor, TensorShape("bn", 3, "h", "w")]


class LlavaQwen3Projector(nn.Module):
    """The transformers model's projector (same parameter names) in vLLM's tensor-parallel linear layers.

    `mlp2x_gelu`: linear_1, GELU, linear_2, sharded column-then-row like any MLP. `mlp_relu_ln` puts a LayerNorm after
    the ReLU, which needs the whole hidden vector: linear_1 gathers its output and linear_2 splits it again.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        projector_type: str,
        bias: bool,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        normalised = checked_projector_type(projector_type) == "mlp_relu_ln"
        self.linear_1 = ColumnParallelLinear(
            input_dim,
            output_dim,
            bias=bias,
            gather_output=normalised,
            quant_config=quant_config,
            prefix=f"{prefix}.linear_1",
        )
        self.act = nn.ReLU() if normalised else nn.GELU()
        self.norm = nn.LayerNorm(output_dim) if normalised else nn.Identity()
        self.linear_2 = RowParallelLinear(
            output_dim,
            output_dim,
            bias=bias,
            input_is_parallel=not normalised,
            quant_config=quant_config,
            prefix=f"{prefix}.linear_2",
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.linear_1(features)
        hidden, _ = self.linear_2(self.norm(self.act(hidden)))
        return hidden


def feature_layers(config: PretrainedConfig) -> list[int]:
    """The tower hidden states the image features are taken from (concatenated feature-wise when several)."""
    layers = config.vision_feature_layer
    return [layers] if isinstance(layers, int) else list(layers)


def build_vision_tower(
    config: PretrainedConfig, quant_config: QuantizationConfig | None, prefix: str
) -> CLIPVisionModel | SiglipVisionModel:
    """vLLM's tower for the config, built only as deep as the deepest feature layer and without the final norm,
    which the features never pass through (transformers' hidden states are taken before it)."""
    vision_config = config.vision_config
    depth = max(get_layer_index(layer, vision_config.num_hidden_layers) for layer in feature_layers(config))
    tower_class = VISION_TOWERS[vision_config.model_type]
    return tower_class(
        vision_config,
        quant_config=quant_config,
        num_hidden_layers_override=depth,
        require_post_norm=False,
        prefix=prefix,
    )


@MULTIMODAL_REGISTRY.register_processor(
    LlavaQwen3MultiModalProcessor, info=LlavaQwen3ProcessingInfo, dummy_inputs=LlavaQwen3DummyInputsBuilder
)
class LlavaQwen3ForConditionalGeneration(nn.Module, SupportsMultiModal):
    """LLaVA-Qwen3 for vLLM: images and embedding modalities in, Qwen3's logits out."""

    hf_to_vllm_mapper = CHECKPOINT_TO_VLLM

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality == IMAGE:
            return IMAGE_TOKEN
        raise ValueError(
            f"LLaVA-Qwen3 takes {modality!r} inputs through LLM.generate with its placeholder in the prompt; chat "
            "messages carry images only."
        )

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        self.feature_layers = feature_layers(config)
        # Keep the CLS token only where the tower has one and the strategy asks for it (SigLIP has none).
        self.feature_select_strategy = (
            "default" if config.vision_has_cls_token and config.vision_feature_select_strategy == "default" else "full"
        )
        self.placeholder_token_ids = [config.image_token_id, *(s["token_id"] for s in config.modalities.values())]
        self.configure_mm_token_handling(config.text_config.vocab_size, self.placeholder_token_ids)
        text_hidden_size = config.text_config.hidden_size

        with self._mark_tower_model(vllm_config, IMAGE):
            self.vision_tower = build_vision_tower(config, quant_config, maybe_prefix(prefix, "vision_tower"))
            self.multi_modal_projector = LlavaQwen3Projector(
                config.vision_config.hidden_size * len(self.feature_layers),
                text_hidden_size,
                config.projector_type,
                config.multimodal_projector_bias,
                quant_config,
                prefix=maybe_prefix(prefix, "multi_modal_projector"),
            )
        self.modality_projectors = nn.ModuleDict(
            {
                name: LlavaQwen3Projector(
                    spec["input_dim"],
                    text_hidden_size,
                    spec["projector_type"],
                    config.multimodal_projector_bias,
                    quant_config,
                    prefix=maybe_prefix(prefix, f"modality_projectors.{name}"),
                )
                for name, spec in config.modalities.items()
            }
        )
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen3ForCausalLM"],
            )

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected features of each image: `(num_images, image_seq_length, text_hidden_size)`."""
        features = self.vision_tower(
            pixel_values.to(self.vision_tower.dtype),
            select_layers=self.feature_layers,
            feature_select_strategy=self.feature_select_strategy,
        )
        return self.multi_modal_projector(features)

    def modality_features(self, name: str, items: Iterable[torch.Tensor]) -> list[torch.Tensor]:
        """Projected vectors of each item of a modality: `(n_i, text_hidden_size)` each."""
        items = list(items)
        projector = self.modality_projectors[name]
        vectors = torch.cat(items).to(projector.linear_1.weight.dtype)
        return list(projector(vectors).split([len(item) for item in items]))

    def embed_multimodal(self, **kwargs: Any) -> MultiModalEmbeddings:
        # vLLM calls this once per run of items of one modality, in prompt order.
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is not None:
            size = self.config.vision_config.image_size
            inputs = LlavaQwen3PixelInputs(pixel_values=pixel_values, resolve_bindings={"h": size, "w": size})
            return self.image_features(inputs.pixel_values)
        for name in self.config.modalities:
            items = kwargs.get(embeddings_field(name))
            if items is not None:
                return self.modality_features(name, items)
        return []

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = self.language_model.compute_logits(hidden_states)
        if logits is not None:
            # Placeholders are input only: the checkpoint's generation_config suppresses them in transformers, which
            # vLLM does not read, so the model does it.
            logits[:, self.placeholder_token_ids] = float("-inf")
        return logits

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
