"""Model cards: README.md with Hub front matter, an architecture table and usage snippets, for a checkpoint folder."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open

from ..eval_results import eval_tables
from ..modeling import MODEL_PARTS
from ..modeling.modeling_llava_qwen3 import part_of


def count_parameters(folder: str | Path) -> dict[str, int]:
    """Parameters per part of the model (`MODEL_PARTS`, named for people: "vision tower", ...), read from the
    safetensors headers (no weights are loaded)."""
    counts: Counter[str] = Counter()
    for shard in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(shard, framework="pt") as weights:
            for name in weights.keys():
                part = part_of(name)
                if part is None:
                    raise ValueError(f"{shard.name} holds {name!r}, which belongs to no part of LLaVA-Qwen3.")
                counts[part] += math.prod(weights.get_slice(name).get_shape())
    if not counts:
        raise ValueError(f"{folder} holds no .safetensors weights.")
    return {part.replace("_", " "): counts[part] for part in MODEL_PARTS if counts[part]}


def render_model_card(
    folder: str | Path,
    repo_id: str,
    base_models: list[str] | None = None,
    license: str = "apache-2.0",
    tags: list[str] | None = None,
) -> str:
    """The README.md text for the checkpoint in `folder`, to be published as `repo_id`."""
    config = json.loads((Path(folder) / "config.json").read_text())
    if config.get("model_type") != "llava_qwen3":
        raise ValueError(f"{folder}/config.json has model_type {config.get('model_type')!r}, expected 'llava_qwen3'.")
    counts = count_parameters(folder)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=base_models or None,
        license=license,
        tags=["llava", "qwen3", "vision-language", "custom_code", *(tags or [])],
    )
    vision, text = config["vision_config"], config["text_config"]
    rows = "\n".join(f"| {part} | {count:,} |" for part, count in counts.items())
    tied = " (tied to the input embeddings)" if config.get("tie_word_embeddings") else ""
    body = f"""
# {repo_id.split("/")[-1]}

A LLaVA-style vision-language model: a {vision["model_type"].removesuffix("_vision_model").upper()} vision tower, an
`{config["projector_type"]}` projector and a Qwen3 language model. It loads with `trust_remote_code=True`.

## Architecture

| part | parameters |
| --- | --- |
{rows}
| **total** | **{sum(counts.values()):,}** |

- Image input: {vision["image_size"]}x{vision["image_size"]} pixels, {config["image_seq_length"]} tokens per image
  (feature layer {config["vision_feature_layer"]}, strategy `{config["vision_feature_select_strategy"]}`).
- Language model: {text["num_hidden_layers"]} layers, hidden size {text["hidden_size"]}, vocabulary
  {text["vocab_size"]:,}, context length {text["max_position_embeddings"]:,} tokens{tied}.

## Usage

```python
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in the picture?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[Image.open("photo.jpg")], text=prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=40)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

With a pipeline:

```python
from transformers import pipeline

pipe = pipeline("image-text-to-text", model="{repo_id}", trust_remote_code=True)
image = {{"type": "image", "image": "photo.jpg"}}
messages = [{{"role": "user", "content": [image, {{"type": "text", "text": "Describe it."}}]}}]
print(pipe(text=messages, max_new_tokens=40, return_full_text=False)[0]["generated_text"])
```
"""
    return f"---\n{data.to_yaml()}\n---\n{body}{results_sections(Path(folder))}"


def results_sections(folder: Path) -> str:
    """Training and evaluation sections from the metric files transformers' Trainer writes, and the tables of
    `llava-qwen3-eval` runs kept in the folder's eval/ (their results.md), where present."""
    sections = ""
    for file_name, title in (("train_results.json", "Training"), ("eval_results.json", "Evaluation")):
        path = folder / file_name
        if path.is_file():
            metrics = json.loads(path.read_text())
            rows = "\n".join(f"| {name} | {_format_metric(value)} |" for name, value in sorted(metrics.items()))
            sections += f"\n## {title}\n\n| metric | value |\n| --- | --- |\n{rows}\n"
    tables = eval_tables(folder)
    if tables:
        heading = "" if "## Evaluation" in sections else "\n## Evaluation\n"
        sections += heading + "".join(f"\n{path.read_text(encoding='utf-8')}" for path in tables)
    return sections


def _format_metric(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_model_card(folder: str | Path, repo_id: str, **card_options: object) -> Path:
    """Writes README.md into `folder` and returns its path."""
    text = render_model_card(folder, repo_id, **card_options)
    ModelCard(text)  # parses the front matter: a malformed card fails here, before anything is written
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
