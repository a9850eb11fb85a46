"""Configuration of LLaVA-Qwen3: a CLIP or SigLIP vision tower, an MLP projector and a Qwen3 language model.

Remote-code file: it is copied next to the weights and imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig

VISION_MODEL_TYPES = ("clip_vision_model", "siglip_vision_model")
# Full two-tower checkpoints whose `vision_config` is what we keep.
DUAL_TOWER_MODEL_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
TEXT_MODEL_TYPES = ("qwen3",)
PROJECTOR_TYPES = ("mlp2x_gelu", "mlp_relu_ln")
VISION_FEATURE_SELECT_STRATEGIES = ("default", "full")


def checked_projector_type(projector_type: str, owner: str = "projector_type") -> str:
    """`projector_type` if it is one of `PROJECTOR_TYPES`, else a ValueError naming `owner` (where it was set)."""
    if projector_type not in PROJECTOR_TYPES:
        raise ValueError(f"{owner} {projector_type!r} is unknown; expected one of {', '.join(PROJECTOR_TYPES)}.")
    return projector_type


def embedding_shape_error(modality: str, index: int, shape: tuple[int, ...], input_dim: int) -> str | None:
    """Why item `index` of `modality`'s embeddings, of `shape`, cannot be projected, or None: each item is one vector
    `(input_dim,)` or a sequence of vectors `(n, input_dim)`."""
    if len(shape) in (1, 2) and shape[-1] == input_dim:
        return None
    return f"modality {modality!r} item {index} has shape {tuple(shape)}; expected ({input_dim},) or (n, {input_dim})."


def _sub_config(value: Any, allowed: tuple[str, ...], default: str, role: str) -> PretrainedConfig:
    """Turns a dict or config into the right config class, refusing model types this model cannot run."""
    if value is None:
        value = {"model_type": default}
    if isinstance(value, PretrainedConfig):
        value = value.to_dict()
    value = dict(value)
    model_type = value.pop("model_type", default)
    if model_type in DUAL_TOWER_MODEL_TYPES and role == "vision_config":
        model_type = DUAL_TOWER_MODEL_TYPES[model_type]
        value = dict(value.get("vision_config") or {})
        value.pop("model_type", None)
    if model_type not in allowed:
        raise ValueError(f"{role} has model_type {model_type!r}; LLaVA-Qwen3 supports {', '.join(allowed)}.")
    return CONFIG_MAPPING[model_type](**value)


def checked_modality(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A modality entry with its defaults filled in, or a ValueError naming the bad field."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"modality name {name!r} must be an identifier such as 'm1'.")
    spec = {"token": f"<{name}>", "projector_type": "mlp2x_gelu", **spec}
    if not isinstance(spec.get("input_dim"), int) or spec["input_dim"] < 1:
        raise ValueError(f"modality {name!r} needs a positive int input_dim, got {spec.get('input_dim')!r}.")
    if not isinstance(spec.get("token_id"), int):
        raise ValueError(f"modality {name!r} needs the int token_id of its placeholder {spec['token']!r}.")
    checked_projector_type(spec["projector_type"], owner=f"modality {name!r}'s projector_type")
    return spec


class LlavaQwen3Config(PretrainedConfig):
    r"""Configuration of [`LlavaQwen3ForConditionalGeneration`].

    Args:
        vision_config (`dict` or `PretrainedConfig`, *optional*):
            A `CLIPVisionConfig` or `SiglipVisionConfig`, picked by its `model_type`. A full `CLIPConfig` or
            `SiglipConfig` is accepted and reduced to its vision part. Defaults to `CLIPVisionConfig()`: ViT-B/32 at
            224 px.
        text_config (`dict` or `Qwen3Config`, *optional*):
            The language model. Defaults to `Qwen3Config()`.
        image_token_id (`int`, *optional*):
            Id of the `<image>` placeholder token; each placeholder position receives one image feature. Also
            readable and settable as `image_token_index`, built-in Llava's name.
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`):
            `"mlp2x_gelu"` (Linear, GELU, Linear as in LLaVA-1.5) or `"mlp_relu_ln"` (Linear, ReLU, LayerNorm, Linear).
        vision_feature_layer (`int` or `list[int]`, *optional*, defaults to -2):
            Index into the tower's hidden states; with a list, the selected layers are concatenated feature-wise.
        vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
            `"default"` drops the CLS token where the tower has one (CLIP), `"full"` keeps every token.
        multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
            Whether the projector's linear layers have biases.
        tie_word_embeddings (`bool`, *optional*):
            Tie the output head to the input embeddings. Defaults to the text config's setting.
        modalities (`dict[str, dict]`, *optional*):
            Extra inputs given as precomputed embeddings, by name: `{"m1": {"input_dim": 768, "token_id": 151670,
            "token": "<m1>", "projector_type": "mlp2x_gelu"}}`. Each gets its own projector into the language
            model's hidden size; each of its vectors replaces one `token` placeholder.
    """

    model_type = "llava_qwen3"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}
    # Built-in Llava's name for the same id, read by code written for Llava; both names stay in sync.
    attribute_map = {"image_token_index": "image_token_id"}

    def __init__(
        self,
        vision_config: dict | PretrainedConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        image_token_id: int | None = None,
        projector_type: str = "mlp2x_gelu",
        vision_feature_layer: int | list[int] = -2,
        vision_feature_select_strategy: str = "default",
        multimodal_projector_bias: bool = True,
        tie_word_embeddings: bool | None = None,
        modalities: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vision_config = _sub_config(vision_config, VISION_MODEL_TYPES, "clip_vision_model", "vision_config")
        self.text_config = _sub_config(text_config, TEXT_MODEL_TYPES, "qwen3", "text_config")
        checked_projector_type(projector_type)
        if vision_feature_select_strategy not in VISION_FEATURE_SELECT_STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy {vision_feature_select_strategy!r} is unknown; "
                f"expected one of {', '.join(VISION_FEATURE_SELECT_STRATEGIES)}."
            )
        self.projector_type = projector_type
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.vision_feature_layer = self._checked_feature_layer(vision_feature_layer)
        self.image_token_id = image_token_id
        self.multimodal_projector_bias = multimodal_projector_bias
        self.modalities = {name: checked_modality(name, spec) for name, spec in (modalities or {}).items()}
        # Saved configs carry the derived value; it must agree with the tower.
        saved_seq_length = kwargs.pop("image_seq_length", None)
        if saved_seq_length is not None and saved_seq_length != self.image_seq_length:
            raise ValueError(
                f"image_seq_length {saved_seq_length} does not match the vision tower, which gives "
                f"{self.image_seq_length} tokens per image."
            )
        if tie_word_embeddings is None:
            tie_word_embeddings = self.text_config.tie_word_embeddings
        kwargs.setdefault("auto_map", self.default_auto_map())
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self._check_token_ids()

    def _check_token_ids(self) -> None:
        """Placeholder ids must name a row of the language model's embeddings (an id past it fails deep in torch)."""
        vocab_size = self.text_config.vocab_size
        named = {"image_token_id": self.image_token_id}
        named |= {f"modalities[{name!r}].token_id": spec["token_id"] for name, spec in self.modalities.items()}
        for name, token_id in named.items():
            if token_id is not None and (not isinstance(token_id, int) or not 0 <= token_id < vocab_size):
                raise ValueError(
                    f"{name} is {token_id!r}, outside the language model's vocabulary [0, {vocab_size}); it must be "
                    "the id of the placeholder token in the tokenizer."
                )

    @staticmethod
    def default_auto_map() -> dict[str, str]:
        """Where the Auto classes find this model in a checkpoint folder (the remote-code file names)."""
        model = "modeling_llava_qwen3.LlavaQwen3ForConditionalGeneration"
        return {
            "AutoConfig": "configuration_llava_qwen3.LlavaQwen3Config",
            "AutoModel": "modeling_llava_qwen3.LlavaQwen3Model",
            "AutoModelForImageTextToText": model,
            # transformers 4.x name of the same auto class, still called by user code on 4.57.
            "AutoModelForVision2Seq": model,
        }

    def _checked_feature_layer(self, layer: int | list[int]) -> int | list[int]:
        num_states = self.vision_config.num_hidden_layers + 1  # embeddings output + one per layer
        layers = [layer] if isinstance(layer, int) else list(layer)
        if not layers or not all(isinstance(index, int) and -num_states <= index < num_states for index in layers):
            raise ValueError(
                f"vision_feature_layer {layer!r} must be an int or a non-empty list of ints in "
                f"[{-num_states}, {num_states - 1}] for a tower with {num_states - 1} layers."
            )
        return layer if isinstance(layer, int) else layers

    def feature_layer_indices(self, layer: int | list[int] | None = None) -> list[int]:
        """The selected hidden states of the tower, in the order they are concatenated, as indices counted from 0 (the
        embeddings' output): `vision_feature_layer`'s, or `layer`'s where given."""
        num_states = self.vision_config.num_hidden_layers + 1
        layer = self.vision_feature_layer if layer is None else layer
        return [index % num_states for index in ([layer] if isinstance(layer, int) else layer)]

    @property
    def vision_has_cls_token(self) -> bool:
        return self.vision_config.model_type == "clip_vision_model"

    @property
    def image_seq_length(self) -> int:
        """Number of `<image>` placeholder tokens (and image features) per image."""
        patches = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        keeps_cls = self.vision_has_cls_token and self.vision_feature_select_strategy == "full"
        return patches + int(keeps_cls)

    @property
    def pixel_values_shape(self) -> tuple[int, int, int]:
        """The shape of one image's pixel values, `(channels, height, width)`: the tower's input size."""
        vision = self.vision_config
        return (vision.num_channels, vision.image_size, vision.image_size)

    def check_pixel_values_shape(self, shape: tuple[int, ...]) -> None:
        """A ValueError unless `shape` is `(num_images, *pixel_values_shape)`, what the processor makes."""
        if len(shape) != 4 or tuple(shape[1:]) != self.pixel_values_shape:
            raise ValueError(
                f"pixel_values has shape {tuple(shape)}; expected (num_images, "
                f"{', '.join(map(str, self.pixel_values_shape))}). Prepare images with the model's processor."
            )

    @property
    def text_head_dim(self) -> int:
        """Size of one attention head of the language model (a Qwen3 config may leave `head_dim` unset)."""
        text = self.text_config
        return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads

    @property
    def num_vision_feature_layers(self) -> int:
        return 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["image_seq_length"] = self.image_seq_length
        return output
