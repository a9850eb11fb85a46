"""`python -m llava_qwen3.serving`: the same as `llava-qwen3-serve`."""

from .cli import main

main()
