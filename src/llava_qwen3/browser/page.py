"""`llava-qwen3-browser-demo --model ONNX_EXPORT --output FOLDER [--dtype q8|fp32|q4]`: writes a static page that
runs an ONNX export in the browser with transformers.js, for any static host.

The folder holds everything the page loads, all from its own origin (nothing from a CDN):

    index.html, demo.js       the page and its module scripts (from this package's static/; pil_resize.js sizes
    pil_resize.js             pictures with Pillow's arithmetic, as the Python processor does)
    demo.json                 what the page needs to know: the model's folder and dtype, the chat prompt around the
                              question (rendered by the Python processor, image placeholders expanded), the image
                              processor's settings, the library versions
    vendor/                   transformers.js' browser build (onnxruntime-web bundled in it) and onnxruntime-web's
                              WASM module and binary, from the npm registry; their licences
    model/                    the export's config, generation config and tokenizer files and the three graphs of the
                              one dtype (transformers.js' names: q8 loads the `_quantized` files)

The npm tarballs are fetched with `npm pack` once into a cache (`browser-demo/` under `$LLAVA_QWEN3_CACHE`, else
`${XDG_CACHE_HOME:-~/.cache}/llava-qwen3`), checked against the integrity hashes pinned here, which are those of
tests/js/package-lock.json (the Node test's transformers.js), and the files the page needs are kept there extracted
(`vendor-VERSIONS/`). The output folder is written staged: complete or absent.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..inference.onnx_layout import GRAPHS, available_variants, check_export_folder, external_data_path


@dataclass(frozen=True)
class NpmPackage:
    """A package pinned by version and by the integrity hash the npm registry publishes for its tarball."""

    name: str
    version: str
    integrity: str  # "sha512-<base64>", as in package-lock.json
    files: tuple[str, ...]  # what the page needs from the tarball (paths under its `package/`)
    licence: str
    licence_file: str | None  # the tarball's licence text, copied beside the files

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


# transformers.js' browser build bundles onnxruntime-web (its WebGPU build, which runs on WASM where the browser has no
# WebGPU) and loads onnxruntime's WASM module and binary at run time: the "asyncify" pair of the same onnxruntime-web.
TRANSFORMERS_JS = NpmPackage(
    "@huggingface/transformers",
    "4.3.1",
    "sha512-5+voSeUCFK6PCKlY15dPhNOKq3/zOTxDN7oC+Wy9dFb1QZ0TSQomZRRy7URRK8YRuUoE9fGMQTTPC5d/pWBJhA==",
    ("dist/transformers.min.js",),
    "Apache-2.0",
    "LICENSE",
)
ONNXRUNTIME_WEB = NpmPackage(
    "onnxruntime-web",
    "1.31.0-dev.20260914-8d85527a0",
    "sha512-Iy7rtadoBgxS/LLvDr3QW38DB1PNXRnr0GJMcL0TAt7c9qjgVQl83UlGCVyeAnK2InpmW8Uc3PL8XIuqtDeF6g==",
    ("dist/ort-wasm-simd-threaded.asyncify.mjs", "dist/ort-wasm-simd-threaded.asyncify.wasm"),
    "MIT",
    None,  # the package ships no licence file; its package.json names MIT
)
PACKAGES = (TRANSFORMERS_JS, ONNXRUNTIME_WEB)
# transformers.js' dtype names -> the export's variants (inference/onnx_layout.py); the first present is the default.
DTYPES = {"q8": "quantized", "fp32": "fp32", "q4": "q4"}
SETTINGS_FILE = "demo.json"  # also what marks a folder as a written page
MODEL_FOLDER = "model"
VENDOR_FOLDER = "vendor"
PAGE_FILES = ("index.html", "demo.js", "pil_resize.js")
# The export's files the page's model folder keeps besides the graphs (the remote-code .py files are not needed).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.jinja",
)
QUESTION_MARK = "\ue000question\ue000"  # stands for the question while the chat template is rendered
DEFAULT_MAX_NEW_TOKENS = 64


def cache_folder() -> Path:
    """The page's cache: `$LLAVA_QWEN3_CACHE/browser-demo`, else `${XDG_CACHE_HOME:-~/.cache}/llava-qwen3/browser-demo`;
    the npm tarballs in its `npm/`, the files the page needs in `vendor-VERSIONS/`."""
    root = os.environ.get("LLAVA_QWEN3_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llava-qwen3")
    return Path(root) / "browser-demo"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_tarball(package: NpmPackage, cache: Path | None = None) -> Path:
    """The package's tarball from the cache, or fetched there with `npm pack` (the user's npm settings: registry,
    proxy, CA) and checked against the pinned integrity hash first."""
    cache = (cache or cache_folder()) / "npm"
    path = cache / package.tarball_name
    if path.is_file() and _integrity(path) == package.integrity:
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise ValueError(
            f"npm is needed to fetch {package.spec} from the npm registry (apt-get install npm, or Node.js from "
            f"nodejs.org); or put its tarball in {cache}."
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as fetched:
        command = [npm, "pack", package.spec, "--pack-destination", fetched, "--silent", "--no-audit", "--no-fund"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        tarballs = list(Path(fetched).glob("*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            reason = (result.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise OSError(f"npm pack {package.spec} failed: {reason}")
        found = _integrity(tarballs[0])
        if found != package.integrity:
            raise ValueError(
                f"{package.spec} from the npm registry has integrity {found}; expected {package.integrity}."
            )
        tarballs[0].replace(path)
    return path


def _extract_vendor_files(folder: Path, cache: Path | None) -> None:
    """The packages' files and licence texts into `folder`, flat (the page points onnxruntime at the folder), with a
    README.txt naming each package, its version, integrity and licence."""
    notes = ["Fetched from the npm registry by llava-qwen3-browser-demo, integrity checked:", ""]
    for package in PACKAGES:
        wanted = {name: name.rsplit("/", 1)[-1] for name in package.files}
        if package.licence_file:
            wanted[package.licence_file] = f"LICENSE-{package.name.rsplit('/', 1)[-1]}.txt"
        with tarfile.open(npm_tarball(package, cache)) as tarball:
            for name, target in wanted.items():
                try:
                    member = tarball.extractfile(f"package/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise OSError(f"{package.spec}'s tarball lacks {name}.")
                with member, open(folder / target, "wb") as out:
                    shutil.copyfileobj(member, out)
        notes.append(f"{package.spec} ({package.licence}) {package.integrity}: {', '.join(wanted.values())}")
    (folder / "README.txt").write_text("\n".join(notes) + "\n", encoding="utf-8")


def vendor_folder(cache: Path | None = None) -> Path:
    """The folder of the library files the page loads (`vendor/` of a written page), extracted once into the cache;
    written beside it and renamed into place, so a folder there is complete."""
    cache = cache or cache_folder()
    folder = cache / "vendor-{}-{}".format(*(package.version for package in PACKAGES))
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    extracting = Path(tempfile.mkdtemp(dir=cache, prefix=".vendor-"))
    try:
        _extract_vendor_files(extracting, cache)
        extracting.chmod(0o755)
        try:
            extracting.rename(folder)
        except OSError:  # another process put it there first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(extracting, ignore_errors=True)
    return folder


def choose_dtype(export: Path, dtype: str | None) -> str:
    """`dtype` checked against the export's variants, or the first of `DTYPES` the export has."""
    if dtype is None:
        present = available_variants(export)
        dtype = next((name for name, variant in DTYPES.items() if variant in present), None)
        if dtype is None:
            check_export_folder(export)  # names what is missing
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is unknown; expected one of {', '.join(DTYPES)}.")
    try:
        check_export_folder(export, DTYPES[dtype])
    except ValueError as error:
        raise ValueError(f"--dtype {dtype} loads the {DTYPES[dtype]!r} graphs: {error}") from None
    return dtype


def _copy_model(export: Path, folder: Path, dtype: str) -> None:
    folder.mkdir()
    (folder / "onnx").mkdir()
    for name in MODEL_FILES:
        if (export / name).is_file():
            shutil.copy2(export / name, folder / name)
    for graph in check_export_folder(export, DTYPES[dtype]).values():
        shutil.copy2(graph, folder / "onnx" / graph.name)
        if external_data_path(graph).is_file():
            shutil.copy2(external_data_path(graph), folder / "onnx" / external_data_path(graph).name)


def page_settings(export: Path, dtype: str, max_new_tokens: int, title: str) -> dict:
    """What the page reads from demo.json: the prompt around the question as the Python processor renders it (with
    and without a picture, each picture's placeholder expanded to its tokens), the image processor's settings."""
    from ..processing import LlavaQwen3Processor

    processor = LlavaQwen3Processor.from_pretrained(export)
    prompts = {}
    for kind, content in (("image", [{"type": "image"}]), ("text", [])):
        turn = {"role": "user", "content": [*content, {"type": "text", "text": QUESTION_MARK}]}
        text = processor.apply_chat_template([turn], add_generation_prompt=True)
        text = text.replace(processor.image_token, processor.image_token * (processor.image_seq_length or 1))
        before, after = text.split(QUESTION_MARK)
        prompts[kind] = [before, after]
    image_processor = json.loads(processor.image_processor.to_json_string())  # as saved: plain JSON values
    image_processor.pop("auto_map", None)
    return {
        "title": title,
        "model": MODEL_FOLDER,
        "dtype": dtype,
        "graphs": list(GRAPHS),
        "image_token": processor.image_token,
        "prompt": prompts,
        "image_processor": image_processor,
        "max_new_tokens": max_new_tokens,
        "libraries": {package.name: package.version for package in PACKAGES},
    }


def is_page_folder(folder: Path) -> bool:
    """Whether `folder` is a page this module wrote."""
    return (folder / SETTINGS_FILE).is_file() and all((folder / name).is_file() for name in PAGE_FILES)


def write_page(
    output: Path,
    export: Path,
    dtype: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    title: str | None = None,
    cache: Path | None = None,
) -> Path:
    """Writes the page for `export` (an ONNX export folder) into `output`, which must not hold anything yet; returns
    `output`. The npm packages come from `cache` (default `cache_folder()`), fetched there where missing."""
    from ..conversion.writing import check_output_folder, staged_folder

    output, export = Path(output), Path(export)
    check_output_folder(output)
    check_export_folder(export)
    dtype = choose_dtype(export, dtype)
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens}.")
    settings = page_settings(export, dtype, max_new_tokens, title or export.resolve().name)
    with staged_folder(output) as staging:
        for name in PAGE_FILES:
            (staging / name).write_bytes(files(__package__).joinpath("static", name).read_bytes())
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", "utf-8")
        shutil.copytree(vendor_folder(cache), staging / VENDOR_FOLDER)
        _copy_model(export, staging / MODEL_FOLDER, dtype)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-browser-demo",
        description="Write a static page that runs an ONNX export in the browser with transformers.js (WASM, WebGPU "
        "where present); serve the folder from any static host, or with llava-qwen3-serve --browser-demo.",
    )
    parser.add_argument("--model", type=Path, required=True, help="an ONNX export folder (llava-qwen3-export-onnx)")
    parser.add_argument("--output", type=Path, required=True, help="the folder to write (new or empty)")
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        help="which graphs the page loads (q8: the INT8 `quantized` files) [the first of q8, fp32, q4 present]",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"the page's default [{DEFAULT_MAX_NEW_TOKENS}]",
    )
    parser.add_argument("--title", help="the page's heading [the export folder's name]")
    return parser


def main(argv: list[str] | None = None) -> None:
    from ..commands import exit_on_error

    parser = build_parser()
    args = parser.parse_args(argv)
    with exit_on_error(parser):
        output = write_page(args.output, args.model, args.dtype, args.max_new_tokens, args.title)
    size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    print(f"wrote {output} ({size / 2**20:.1f} MiB); serve it over HTTP from any static host, e.g.")
    print(f"  python -m http.server --directory {output} 8080   # then open http://127.0.0.1:8080/")


if __name__ == "__main__":
    main(sys.argv[1:])
