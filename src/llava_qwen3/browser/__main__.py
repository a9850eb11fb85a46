"""`python -m llava_qwen3.browser --model ONNX_EXPORT --output FOLDER`: the same as `llava-qwen3-browser-demo`."""

import sys

from .page import main

main(sys.argv[1:])
