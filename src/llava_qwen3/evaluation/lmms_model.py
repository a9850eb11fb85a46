"""LLaVA-Qwen3 as an lmms-eval model, so the harness most VLM papers report with runs it:

    lmms-eval --model llava_qwen3 --model_args pretrained=PATH[,backend=onnx,variant=fp32|,quantize=int8] --tasks TASK

The package declares `manifest` under lmms-eval's `lmms_eval.models` entry points, so installing both is all the
registration there is. Generation goes through `llava_qwen3.inference` with the prompt the eval command builds
(`run.question_record`), so a task scored with this package's metrics gives the eval command's numbers.

Only lmms-eval imports this module (it needs lmms_eval).
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from PIL import Image
from tqdm.auto import tqdm

from ..inference import GenerationRequest, GenerationSettings, load_backend
from .data import with_image_placeholders
from .run import question_record

MODEL_ID = "llava_qwen3"
DEFAULT_MAX_NEW_TOKENS = 32  # the eval command's default


def manifest() -> ModelManifest:
    """lmms-eval's registration of `LlavaQwen3Lmms` as `llava_qwen3` (the `lmms_eval.models` entry point)."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LlavaQwen3Lmms")


class LlavaQwen3Lmms(lmms):
    """A LLaVA-Qwen3 checkpoint (torch) or ONNX export (onnx) answering lmms-eval's generation requests in batches.

    Model arguments, as the eval command's flags: `pretrained` (folder or repo id), `backend` ("torch" or "onnx"),
    `variant` (ONNX graphs, default "quantized"), `device` and `quantize` (torch), `threads`; and `batch_size`,
    `max_new_tokens` (when a task sets none).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        backend: str = "torch",
        variant: str | None = None,
        batch_size: int | str = 8,
        device: str | None = None,
        quantize: str | None = None,
        threads: int | str | None = None,
        max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if max_batch_size is not None or str(batch_size).startswith("auto"):
            raise ValueError("automatic batch sizes are not supported; pass a number as --batch_size.")
        # lmms-eval passes --model_args values as strings; load_backend checks them as the eval command does.
        threads = None if threads is None else int(threads)
        options = {"variant": variant, "device": device, "quantize": quantize, "threads": threads}
        self.backend = load_backend(pretrained, backend, **options)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}.")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """The generated text of each request, decoded in batches of `batch_size` in the order given."""
        texts = []
        with tqdm(total=len(requests), desc="llava_qwen3 generating", disable=self.rank != 0) as bar:
            for start in range(0, len(requests), self.batch_size):
                batch = [self._request(instance) for instance in requests[start : start + self.batch_size]]
                for generation in self.backend.generate(batch):
                    if generation.error is not None:
                        raise ValueError(f"a request could not be generated: {generation.error}")
                    texts.append(generation.text)
                bar.update(len(batch))
        return texts

    def _request(self, instance: Instance) -> GenerationRequest:
        context, generation_kwargs, doc_to_visual, doc_id, task, split = instance.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        if not all(isinstance(visual, Image.Image) for visual in visuals):
            kinds = sorted({type(visual).__name__ for visual in visuals})
            raise ValueError(f"llava_qwen3 takes images (PIL); task {task!r} gives {', '.join(kinds)}.")
        images = [visual.convert("RGB") for visual in visuals]
        question = with_image_placeholders(context, len(images))
        return GenerationRequest(question_record(self.backend, question, images), self._settings(generation_kwargs))

    def _settings(self, generation_kwargs: dict[str, Any]) -> GenerationSettings:
        """lmms-eval's generation arguments as greedy settings: `max_new_tokens`, and `until` strings that stop."""
        kwargs = dict(generation_kwargs or {})
        if kwargs.get("do_sample") or int(kwargs.get("num_beams") or 1) > 1:
            raise ValueError("llava_qwen3 evaluates with greedy decoding; set do_sample to false and num_beams to 1.")
        until = kwargs.get("until") or ()
        return GenerationSettings(
            max_new_tokens=int(kwargs.get("max_new_tokens") or self.max_new_tokens),
            stop=(until,) if isinstance(until, str) else tuple(until),
        )

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("llava_qwen3 runs generation tasks (output_type generate_until) only.")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("llava_qwen3 runs single-round generation tasks (output_type generate_until) only.")
