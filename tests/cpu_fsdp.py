"""`llava-qwen3-train` under FSDP on CPU processes, for tests/test_training_scale.py (run by `accelerate launch`).

accelerate turns FSDP on only for accelerator devices (its state falls back to plain data parallelism on CPUs); this
lifts that one gate, so the rest is accelerate's and torch's own FSDP2 code, run over gloo.
"""

import sys

from accelerate import state
from accelerate.utils import DistributedType

from llava_qwen3.training.cli import main

accelerator_state_init = state.AcceleratorState.__init__


def init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


state.AcceleratorState.__init__ = init_with_fsdp_on_cpu

if __name__ == "__main__":
    main(sys.argv[1:])
