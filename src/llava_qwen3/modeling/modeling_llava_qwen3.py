"""LLaVA-Qwen3: image features from a CLIP/SigLIP tower, projected into a Qwen3 language model.

Data flow: pixel_values -> vision tower -> selected hidden states -> projector -> written into the token embeddings at
the `<image>` placeholder positions -> Qwen3 -> logits. The tower and the language model are transformers' own
modules; this file holds only the projector, the merge and the generation glue.

Remote-code file: it is copied next to the weights and imports only torch, transformers and its configuration file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoModel, Cache, GenerationMixin, PreTrainedModel, modeling_outputs
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_llava_qwen3 import LlavaQwen3Config, checked_modality, checked_projector_type, embedding_shape_error

# What differs between the transformers lines this file runs on (5.x and 4.57), in one place: the code below reads
# these names and never the version itself.
TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# transformers 5.24 renamed the KV cache from `past_key_values` to `cache` (model arguments, outputs, generate()). The
# model takes either name and passes the cache on, and returns it, under the installed line's.
CACHE_ARGUMENT = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
# Where the old name is deprecated, passing it warns as transformers' own models do.
renamed_cache_argument = (
    deprecate_kwarg("past_key_values", "5.40.0", new_name="cache") if CACHE_ARGUMENT == "cache" else (lambda f: f)
)
# transformers 5.24's vision-language outputs also carry the image encoder's output (`image_outputs`: its last hidden
# state, hidden states, attentions and the per-image features as `pooler_output`); earlier lines' do not.
BaseOutput = getattr(modeling_outputs, "MultimodalBaseModelOutputWithPast", BaseModelOutputWithPast)
CausalLMOutput = getattr(modeling_outputs, "MultimodalCausalLMOutputWithPast", CausalLMOutputWithPast)
HAS_IMAGE_OUTPUTS = "image_outputs" in BaseOutput.__dataclass_fields__
# transformers 5's `get_image_features` returns a `BaseModelOutputWithPooling` (the per-image features as
# `pooler_output`); 4.x's returns the features tensor.
IMAGE_FEATURES_AS_OUTPUT = TRANSFORMERS_MAJOR >= 5
# transformers 5 dropped the `vision_model.` level inside CLIP/SigLIP vision models and saves without it. 4.x reads that
# layout through this rename (and writes it back on save), so one checkpoint serves both lines; 5 needs none.
CHECKPOINT_RENAMES = {} if TRANSFORMERS_MAJOR >= 5 else {"vision_tower.(?!vision_model.)": "vision_tower.vision_model."}
# transformers 4.x's CLIP encoder layer takes its causal mask positionally; every other layer takes (hidden, mask).
CLIP_LAYER_TAKES_CAUSAL_MASK = TRANSFORMERS_MAJOR < 5
# Tied parameters: transformers 5 maps each to its source, 4.x lists them.
TIED_WEIGHTS_KEYS = (
    {"lm_head.weight": "model.language_model.embed_tokens.weight"} if TRANSFORMERS_MAJOR >= 5 else ["lm_head.weight"]
)
# The head's tensor-parallel plan, the value transformers' own Llava (5.x) and Qwen3 (4.x) give it on each line.
LM_HEAD_TP_PLAN = "colwise_gather_output" if TRANSFORMERS_MAJOR >= 5 else "colwise_rep"


def vision_transformer(vision_tower: nn.Module) -> nn.Module:
    """The transformer inside a CLIP/SigLIP vision model (its embeddings, encoder and norms): transformers 4.x nests
    it one level deeper, under `vision_model`."""
    return getattr(vision_tower, "vision_model", vision_tower)


logger = logging.get_logger(__name__)

# The model's parts, as the prefixes of their modules' names in LlavaQwen3ForConditionalGeneration. Training stages,
# per-part learning rates, LoRA and the model card's parameter counts all read this one list.
MODEL_PARTS = {
    "vision_tower": ("model.vision_tower",),
    "projector": ("model.multi_modal_projector", "model.modality_projectors"),
    "language_model": ("model.language_model", "lm_head"),
}


def part_of(parameter_name: str) -> str | None:
    """The part (a key of `MODEL_PARTS`) a parameter or module name belongs to, or None."""
    return next(
        (
            part
            for part, prefixes in MODEL_PARTS.items()
            if any(parameter_name == prefix or parameter_name.startswith(prefix + ".") for prefix in prefixes)
        ),
        None,
    )


@dataclass
class LlavaQwen3ModelOutputWithPast(BaseOutput):
    """Language-model outputs plus the projected image features that were merged into the sequence (and, on
    transformers 5.24+, the image encoder's output as `image_outputs`)."""

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class LlavaQwen3CausalLMOutputWithPast(CausalLMOutput):
    """Causal language-model outputs of [`LlavaQwen3ForConditionalGeneration`], plus the merged image features."""

    image_hidden_states: torch.FloatTensor | None = None


def one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache, given under its name on the installed transformers line or the other one."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache once: as cache (or past_key_values, its name before transformers 5.24).")
    return cache if cache is not None else past_key_values


class LlavaQwen3MultiModalProjector(nn.Module):
    """Maps features of another encoder into the language model's hidden size.

    `mlp2x_gelu` is LLaVA-1.5's projector (linear_1, GELU, linear_2; the same parameter names as transformers' Llava),
    `mlp_relu_ln` adds a LayerNorm after the activation.
    """

    def __init__(self, input_dim: int, output_dim: int, projector_type: str, bias: bool = True) -> None:
        super().__init__()
        normalised = checked_projector_type(projector_type) == "mlp_relu_ln"
        self.linear_1 = nn.Linear(input_dim, output_dim, bias=bias)
        self.act = nn.ReLU() if normalised else nn.GELU()
        self.norm = nn.LayerNorm(output_dim) if normalised else nn.Identity()
        self.linear_2 = nn.Linear(output_dim, output_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.norm(self.act(self.linear_1(features))))


class LlavaQwen3PreTrainedModel(PreTrainedModel):
    """Weight loading, initialisation and capability flags shared by the LLaVA-Qwen3 models."""

    config_class = LlavaQwen3Config
    config: LlavaQwen3Config
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen3DecoderLayer", "CLIPEncoderLayer", "SiglipEncoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]  # the name on each line
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True  # the transformers 4.x name of the flag above
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The decoding steps (what generate() compiles with a static cache) hold no image or embedding inputs and run
    # only transformers' Qwen3; tested: a compiled static-cache greedy run equals the eager one.
    _can_compile_fullgraph = True
    _checkpoint_conversion_mapping = CHECKPOINT_RENAMES


class LlavaQwen3Model(LlavaQwen3PreTrainedModel):
    """Vision tower, projector and Qwen3 decoder, without the language-model head."""

    def __init__(self, config: LlavaQwen3Config) -> None:
        super().__init__(config)
        if config.image_token_id is None:
            raise ValueError(
                "config.image_token_id is not set, so the model cannot tell where images go: set it to the id of "
                "<image> in the tokenizer (llava-qwen3-build does)."
            )
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaQwen3MultiModalProjector(
            config.vision_config.hidden_size * config.num_vision_feature_layers,
            config.text_config.hidden_size,
            config.projector_type,
            bias=config.multimodal_projector_bias,
        )
        self.modality_projectors = nn.ModuleDict(
            {name: self._modality_projector(spec) for name, spec in config.modalities.items()}
        )
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def _modality_projector(self, spec: dict[str, Any]) -> LlavaQwen3MultiModalProjector:
        return LlavaQwen3MultiModalProjector(
            spec["input_dim"],
            self.config.text_config.hidden_size,
            spec["projector_type"],
            bias=self.config.multimodal_projector_bias,
        )

    def add_modality(
        self, name: str, input_dim: int, token_id: int, token: str | None = None, projector_type: str = "mlp2x_gelu"
    ) -> None:
        """Adds a modality's config entry and a freshly initialised projector (the token must exist already)."""
        if name in self.config.modalities:
            raise ValueError(f"modality {name!r} exists already.")
        spec = {"input_dim": input_dim, "token_id": token_id, "projector_type": projector_type}
        spec = checked_modality(name, spec if token is None else {**spec, "token": token})
        projector = self._modality_projector(spec)
        weight = self.get_input_embeddings().weight
        projector.apply(self._init_weights).to(weight.device, weight.dtype)
        self.modality_projectors[name] = projector
        self.config.modalities = {**self.config.modalities, name: spec}

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            given = f"{type(pixel_values).__name__} of {getattr(pixel_values, 'dtype', '?')}"
            raise TypeError(
                f"pixel_values must be a floating-point torch.Tensor, got a {given}; call the processor with "
                "return_tensors='pt'."
            )
        self.config.check_pixel_values_shape(tuple(pixel_values.shape))

    def project_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected features of each image, `(num_images, image_seq_length, text_hidden_size)`: what the model writes
        over the `<image>` placeholders. The tower runs only up to the deepest selected layer."""
        self._check_pixel_values(pixel_values)
        layers = self.config.feature_layer_indices()
        states = self._tower_hidden_states(pixel_values, max(layers) + 1)
        return self._project([states[index] for index in layers], self.config.vision_feature_select_strategy)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple | torch.Tensor:
        """The projected features of each image, as transformers' built-in Llava gives them on each line.

        transformers 5: a `BaseModelOutputWithPooling` whose `pooler_output` holds one `(image_seq_length,
        text_hidden_size)` tensor per image and whose `last_hidden_state` is the tower's hidden state at the deepest
        selected layer (later layers are not run); with `output_hidden_states` or `output_attentions` (arguments or
        config) the whole tower runs and its hidden states and attentions come back too; `return_dict=False` gives a
        tuple. transformers 4.x: the `(num_images, image_seq_length, text_hidden_size)` tensor.
        """
        self._check_pixel_values(pixel_values)
        layers = self.config.feature_layer_indices(vision_feature_layer)
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        return_dict = kwargs.pop("return_dict", None)
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        output_attentions = kwargs.pop("output_attentions", None)
        vision_config = self.config.vision_config
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states or vision_config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions or vision_config.output_attentions
        if output_hidden_states or output_attentions:
            tower_output = self.vision_tower(
                pixel_values.to(self.vision_tower.dtype),
                output_hidden_states=True,
                output_attentions=output_attentions,
                return_dict=True,
                **kwargs,
            )
            states, last_hidden_state = tower_output.hidden_states, tower_output.last_hidden_state
            attentions = tower_output.attentions
        else:
            states = self._tower_hidden_states(pixel_values, max(layers) + 1)
            last_hidden_state, attentions = states[-1], None
        features = self._project([states[index] for index in layers], strategy)
        if not IMAGE_FEATURES_AS_OUTPUT:
            return features
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=list(features),
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=attentions,
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    def _tower_hidden_states(self, pixel_values: torch.Tensor, num_states: int) -> list[torch.Tensor]:
        """The tower's first `num_states` hidden states (its embeddings' output, then each layer's). The layers past
        them, the final norm and SigLIP's pooling head are not run: LLaVA reads an inner layer, so they would be
        computed and thrown away."""
        tower = vision_transformer(self.vision_tower)
        hidden = tower.embeddings(pixel_values.to(self.vision_tower.dtype))
        if hasattr(tower, "pre_layrnorm"):  # CLIP's norm before the encoder (transformers' spelling)
            hidden = tower.pre_layrnorm(hidden)
        states = [hidden]
        extra = (None,) if CLIP_LAYER_TAKES_CAUSAL_MASK and self.config.vision_has_cls_token else ()
        for layer in tower.encoder.layers[: num_states - 1]:
            output = layer(hidden, None, *extra)
            hidden = output[0] if isinstance(output, tuple) else output
            states.append(hidden)
        return states

    def _project(self, states: list[torch.Tensor], strategy: str) -> torch.Tensor:
        first_token = 1 if self.config.vision_has_cls_token and strategy == "default" else 0
        return self.multi_modal_projector(torch.cat([state[:, first_token:] for state in states], dim=-1))

    def get_modality_features(self, name: str, embeddings: list[torch.Tensor]) -> torch.Tensor:
        """Projected features of a modality's items, in order: `(total_vectors, text_hidden_size)`.

        Each item is one vector `(input_dim,)` or a sequence of vectors `(n, input_dim)`.
        """
        if name not in self.config.modalities:
            known = ", ".join(self.config.modalities) or "none"
            raise ValueError(f"modality {name!r} is unknown; this model has: {known}. Add it with add_modality.")
        input_dim = self.config.modalities[name]["input_dim"]
        projector = self.modality_projectors[name]
        weight = projector.linear_1.weight
        rows = []
        for index, item in enumerate(embeddings):
            item = torch.as_tensor(item)
            error = embedding_shape_error(name, index, tuple(item.shape), input_dim)
            if error:
                raise ValueError(error)
            rows.append(item.reshape(-1, input_dim).to(weight.device, weight.dtype))
        if not rows:
            raise ValueError(f"modality {name!r} was given no embeddings.")
        return projector(torch.cat(rows))

    def _placeholder_mask(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, token_id: int
    ) -> torch.Tensor:
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    def _scatter(self, inputs_embeds: torch.Tensor, mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), features)

    def merge_image_features(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Writes the image features, in order, over the `<image>` placeholder positions of the batch."""
        mask = self._placeholder_mask(input_ids, inputs_embeds, self.config.image_token_id)
        num_placeholders = int(mask.sum())
        num_images, per_image = image_features.shape[:2]
        if num_placeholders != num_images * per_image:
            raise ValueError(
                f"The input holds {num_placeholders} image placeholder tokens ({num_placeholders / per_image:g} images "
                f"of {per_image} tokens) but {num_images} images were given. Build inputs with the processor, which "
                "expands each <image> in the text to the right number of tokens."
            )
        return self._scatter(inputs_embeds, mask, image_features)

    def merge_modality_features(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, modality_embeds: dict[str, list]
    ) -> torch.Tensor:
        """Writes each modality's projected vectors, in order, over its placeholder positions of the batch."""
        for name, embeddings in modality_embeds.items():
            features = self.get_modality_features(name, embeddings)
            spec = self.config.modalities[name]
            mask = self._placeholder_mask(input_ids, inputs_embeds, spec["token_id"])
            num_placeholders = int(mask.sum())
            if num_placeholders != features.shape[0]:
                raise ValueError(
                    f"The input holds {num_placeholders} {spec['token']} placeholder tokens but the {name!r} "
                    f"embeddings give {features.shape[0]} vectors (a (dim,) item is one vector, an (n, dim) item n). "
                    "Build inputs with the processor, which expands each placeholder to its item's length."
                )
            inputs_embeds = self._scatter(inputs_embeds, mask, features)
        return inputs_embeds

    def _warn_past_context(self, new_length: int, past_key_values: Cache | None) -> None:
        total = new_length + (0 if past_key_values is None else past_key_values.get_seq_length())
        limit = self.config.text_config.max_position_embeddings
        if total > limit:
            logger.warning_once(
                f"The sequence holds {total} tokens, more than the model's context of {limit} "
                "(max_position_embeddings): positions past it were never trained and the output degrades. Shorten "
                "the prompt or lower max_new_tokens."
            )

    def _check_placeholders_have_inputs(
        self, input_ids: torch.Tensor, given_modalities: set[str], has_pixels: bool
    ) -> None:
        placeholders = {"image": (self.config.image_token_id, has_pixels)}
        for name, spec in self.config.modalities.items():
            placeholders[name] = (spec["token_id"], name in given_modalities)
        for name, (token_id, given) in placeholders.items():
            if not given and bool((input_ids == token_id).any()):
                inputs = "pixel_values" if name == "image" else f"modality_embeds[{name!r}]"
                raise ValueError(f"The input holds {name} placeholder tokens but no {inputs} were given.")

    @can_return_tuple
    @renamed_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        modality_embeds: dict[str, list[torch.Tensor]] | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> LlavaQwen3ModelOutputWithPast | tuple:
        r"""
        modality_embeds (`dict[str, list[torch.Tensor]]`, *optional*):
            Precomputed embeddings by modality name, each item `(input_dim,)` (one token) or `(n, input_dim)`
            (n tokens), in placeholder order across the batch.
        past_key_values (`Cache`, *optional*):
            The name of `cache` before transformers 5.24; either may be given. With a cache that already holds a
            prefix, `pixel_values` and `modality_embeds` are those of the placeholders in `input_ids` only.
        """
        cache = one_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        modality_embeds = modality_embeds or {}
        # Checked eagerly only: a compiled decoding step (new tokens, never placeholders) must not branch on data.
        if not torch.compiler.is_compiling():
            self._warn_past_context(inputs_embeds.shape[1], cache)
            if input_ids is not None and (_is_prefill(cache) or input_ids.shape[1] > 1):
                self._check_placeholders_have_inputs(input_ids, set(modality_embeds), pixel_values is not None)

        image_features, image_outputs = None, {}
        if pixel_values is not None and HAS_IMAGE_OUTPUTS:
            encoded = self.get_image_features(
                pixel_values,
                return_dict=True,
                output_hidden_states=kwargs.get("output_hidden_states"),
                output_attentions=kwargs.get("output_attentions"),
            )
            image_features, image_outputs = torch.stack(encoded.pooler_output), {"image_outputs": encoded}
        elif pixel_values is not None:
            image_features = self.project_images(pixel_values)
        if image_features is not None:
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, image_features)
        if modality_embeds:
            inputs_embeds = self.merge_modality_features(input_ids, inputs_embeds, modality_embeds)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **{CACHE_ARGUMENT: cache},
            **kwargs,
        )
        return LlavaQwen3ModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            **image_outputs,
        )


class LlavaQwen3ForConditionalGeneration(LlavaQwen3PreTrainedModel, GenerationMixin):
    """LLaVA-Qwen3 with a language-model head: image + text in, text out, through `generate()`."""

    _tied_weights_keys = TIED_WEIGHTS_KEYS
    # The language model's plans come from its Qwen3 config; these place the head.
    _tp_plan = {"lm_head": LM_HEAD_TP_PLAN}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: LlavaQwen3Config) -> None:
        super().__init__(config)
        self.model = LlavaQwen3Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    # The parts, reachable from the head as on transformers 4.x's built-in Llava (code written for it reads them).
    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple | torch.Tensor:
        """The projected features of each image; see `LlavaQwen3Model.get_image_features`."""
        return self.model.get_image_features(
            pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    @can_return_tuple
    @renamed_cache_argument
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        modality_embeds: dict[str, list[torch.Tensor]] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> LlavaQwen3CausalLMOutputWithPast | tuple:
        r"""
        modality_embeds (`dict[str, list[torch.Tensor]]`, *optional*):
            Precomputed embeddings by modality name, each item `(input_dim,)` (one token) or `(n, input_dim)`
            (n tokens), in placeholder order across the batch.
        past_key_values (`Cache`, *optional*):
            The name of `cache` before transformers 5.24; either may be given.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets aligned with `input_ids`; positions set to -100 are ignored by the loss.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            Compute logits only for the last `logits_to_keep` positions (0 keeps all), or for the given indices.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            modality_embeds=modality_embeds,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )

        return LlavaQwen3CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            **({"image_outputs": outputs.image_outputs} if HAS_IMAGE_OUTPUTS else {}),
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        modality_embeds: dict[str, list[torch.Tensor]] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        # Pixels and embeddings go to the steps whose input holds their placeholders: the prefill, or the first step
        # of a prompt continued from a cache that holds its beginning. Decoding steps get neither: the cache already
        # holds them. Neither line knows modality_embeds, so both go through here. The named arguments are those
        # generate() inspects (it accepts inputs_embeds only where this signature names them).
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
        )
        whole_prompt = _is_prefill(kwargs.get(CACHE_ARGUMENT)) or not kwargs.get("use_cache", True)
        step_ids = model_inputs.get("input_ids")
        if whole_prompt or _holds(step_ids, self.config.image_token_id):
            model_inputs["pixel_values"] = pixel_values
        if whole_prompt or any(_holds(step_ids, spec["token_id"]) for spec in self.config.modalities.values()):
            model_inputs["modality_embeds"] = modality_embeds
        return model_inputs


def _holds(input_ids: torch.Tensor | None, token_id: int) -> bool:
    return input_ids is not None and input_ids.shape[-1] > 1 and bool((input_ids == token_id).any())


def _is_prefill(cache: Cache | None) -> bool:
    return cache is None or cache.get_seq_length() == 0
