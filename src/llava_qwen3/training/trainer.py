"""transformers' Trainer with per-part learning rates, LLaVA's length-grouped batches and streamed data; everything
else (mixed precision, accumulation, checkpoints, resume, logging integrations, accelerate/DeepSpeed/FSDP) is the
Trainer's own."""

from __future__ import annotations

from typing import Any

from accelerate.data_loader import IterableDatasetShard
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from .stages import parameter_groups
from .streaming import StreamingRecords, StreamProgress, StreamStateCallback


class LlavaQwen3Trainer(Trainer):
    """A Trainer whose optimizer gives each model part (`vision_tower`, `projector`, `language_model`) its own
    learning rate (parts not named use `args.learning_rate`).

    `lengths` (one per record, e.g. `RecordDataset.lengths`) turns on transformers' `LengthGroupedSampler` over them:
    LLaVA's `group_by_modality_length`. `stream_progress` is given with a `StreamingRecords` dataset: the Trainer
    notes the stream position of each batch it trains on and each checkpoint saves it."""

    def __init__(
        self,
        *args: Any,
        part_learning_rates: dict[str, float] | None = None,
        lengths: list[int] | None = None,
        stream_progress: StreamProgress | None = None,
        **kwargs: Any,
    ) -> None:
        self.part_learning_rates = dict(part_learning_rates or {})
        self.lengths = lengths
        self.stream_progress = stream_progress
        super().__init__(*args, **kwargs)
        if stream_progress is not None:
            self.add_callback(StreamStateCallback(stream_progress, self.args.dataloader_num_workers))

    def create_optimizer(self, *args: Any, **kwargs: Any):
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            groups = parameter_groups(
                self.model, self.part_learning_rates, self.args.learning_rate, self.args.weight_decay
            )
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        if self.lengths is None:
            return super()._get_train_sampler(*args, **kwargs)
        # As the Trainer builds it for group_by_length, with lengths it cannot read from these examples.
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(batch, lengths=self.lengths)

    def get_train_dataloader(self):
        dataloader = super().get_train_dataloader()
        shard = dataloader.dataset
        if isinstance(shard, IterableDatasetShard) and isinstance(shard.dataset, StreamingRecords):
            # Each process already streams its own part (split_dataset_by_node): accelerate's shard would keep
            # only 1/world_size of it. The same neutralising the Trainer does for its rank-aware samplers.
            shard.num_processes, shard.process_index = 1, 0
        return dataloader

    def training_step(self, model, inputs, *args: Any, **kwargs: Any):
        positions = inputs.pop("stream_position", None)
        loss = super().training_step(model, inputs, *args, **kwargs)
        if positions is not None and self.stream_progress is not None:
            self.stream_progress.trained_on(positions)
        return loss
