"""Publish a checkpoint folder to the Hugging Face Hub in one commit, with a generated model card.

    llava-qwen3-push FOLDER ORG/NAME [--public] [--revision BRANCH] [--base-model ID ...] [--license L] [--dry-run]

Exactly the files a checkpoint needs are uploaded, named by role (weights, configs, tokenizer, processor and chat
template, remote code, training and evaluation results, card); anything else in the folder (trainer state, run
configs with local paths, stray keys) stays behind, and the dry run lists what would go. A new repository is private
unless --public is given. Large files go through the Hub's large-file path (Xet or LFS), handled by huggingface_hub.
The token comes from huggingface_hub's usual sources (HF_TOKEN, `hf auth login`) and is never printed or written.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from ..commands import exit_on_error
from .model_card import render_model_card

# An unreachable Hub raises the errors of huggingface_hub's HTTP client: the base its own HTTP error extends.
HUB_CLIENT_ERRORS = tuple(base for base in HfHubHTTPError.__bases__ if not issubclass(OSError, base))

REMOTE_CODE_FILES = ("configuration_llava_qwen3.py", "modeling_llava_qwen3.py", "processing_llava_qwen3.py")
# The files a checkpoint is made of, by role (patterns); everything else in a folder is left out of a push.
CHECKPOINT_FILES = {
    "weights": ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
    "config": ("config.json", "generation_config.json"),
    "tokenizer": (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
    ),
    "processor": ("processor_config.json", "preprocessor_config.json", "chat_template.jinja", "chat_template.json"),
    "remote code": REMOTE_CODE_FILES,
    "results": ("train_results.json", "eval_results.json"),
}


@dataclass
class PushPlan:
    """The files one push uploads, and the model card text."""

    folder: Path
    repo_id: str
    files: list[Path]
    card: str
    card_from_folder: bool

    def describe(self) -> str:
        lines = [f"{path.stat().st_size:>14,}  {path.name}  ({file_role(path.name)})" for path in self.files]
        card_source = "from the folder" if self.card_from_folder else "generated"
        lines.append(f"{len(self.card.encode()):>14,}  README.md ({card_source})")
        return "\n".join(lines)


def file_role(name: str) -> str | None:
    """The role of a file name in a checkpoint (see `CHECKPOINT_FILES`), or None for a file that is not part of one."""
    return next(
        (role for role, patterns in CHECKPOINT_FILES.items() if any(fnmatch.fnmatch(name, p) for p in patterns)), None
    )


def checkpoint_files(folder: Path) -> list[Path]:
    """The files of `folder` that belong to the checkpoint, sorted; training leftovers and strays are left out."""
    return sorted(path for path in folder.iterdir() if path.is_file() and file_role(path.name) is not None)


def plan_push(folder: str | Path, repo_id: str, **card_options: object) -> PushPlan:
    """Checks the folder is a complete LLaVA-Qwen3 checkpoint and lists what a push would upload."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id {repo_id!r} must look like 'org/name'.")
    config_path = folder / "config.json"
    if not config_path.is_file() or json.loads(config_path.read_text()).get("model_type") != "llava_qwen3":
        raise ValueError(f"{folder} holds no LLaVA-Qwen3 config.json (model_type 'llava_qwen3').")
    missing = [name for name in REMOTE_CODE_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks the remote-code files {', '.join(missing)}; save it with save_pretrained.")
    if not list(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} holds no .safetensors weights.")
    readme = folder / "README.md"
    card_from_folder = readme.is_file()
    card = (
        readme.read_text(encoding="utf-8") if card_from_folder else render_model_card(folder, repo_id, **card_options)
    )
    return PushPlan(folder, repo_id, checkpoint_files(folder), card, card_from_folder)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = True,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload LLaVA-Qwen3 checkpoint",
    **card_options: object,
) -> str:
    """Creates the repo (and branch), uploads the checkpoint and its card in one commit; returns the commit URL."""
    plan = plan_push(folder, repo_id, **card_options)
    api = HfApi(token=token)  # the endpoint is huggingface_hub's: HF_ENDPOINT where set
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=path) for path in plan.files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card.encode()))
    commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)
    return commit.commit_url


def main(argv: list[str] | None = None) -> None:
    """Command line of push_to_hub."""
    parser = argparse.ArgumentParser(
        prog="llava-qwen3-push", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id", help="org/name")
    parser.add_argument("--public", action="store_true", help="make a new repository public (default: private)")
    parser.add_argument("--revision", help="branch to commit to (created if missing); default main")
    parser.add_argument("--base-model", action="append", default=[], help="base model id for the card (repeatable)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dry-run", action="store_true", help="print the files and the card; upload nothing")
    args = parser.parse_args(argv)
    card_options = {"base_models": args.base_model, "license": args.license}
    visibility = "public" if args.public else "private"
    with exit_on_error(parser, HUB_CLIENT_ERRORS):
        if args.dry_run:
            plan = plan_push(args.folder, args.repo_id, **card_options)
            print(f"would upload to {args.repo_id} ({visibility} if new):")
            print(plan.describe())
            print("\n----- README.md -----")
            print(plan.card)
            return
        url = push_to_hub(args.folder, args.repo_id, not args.public, args.revision, **card_options)
    print(f"pushed {args.folder} to {url}")


if __name__ == "__main__":
    main()
