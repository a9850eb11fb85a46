"""Publish a checkpoint folder to the Hugging Face Hub in one commit, with a generated model card.

    llava-qwen3-push FOLDER ORG/NAME [--private] [--revision BRANCH] [--base-model ID ...] [--license L] [--dry-run]

Only the files `from_pretrained` reads are uploaded (weights, configs, tokenizer, chat template, remote code, card);
large files go through the Hub's large-file path (Xet or LFS), handled by huggingface_hub. The token comes from
huggingface_hub's usual sources (HF_TOKEN, `hf auth login`) and is never printed or written.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from .model_card import render_model_card

# What a checkpoint folder holds that from_pretrained (model, processor, tokenizer, remote code) reads.
CHECKPOINT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.py",
    "*.jinja",
    "merges.txt",
    "vocab.txt",
)
REMOTE_CODE_FILES = ("configuration_llava_qwen3.py", "modeling_llava_qwen3.py", "processing_llava_qwen3.py")


@dataclass
class PushPlan:
    """The files one push uploads, and the model card text."""

    folder: Path
    repo_id: str
    files: list[Path]
    card: str
    card_from_folder: bool

    def describe(self) -> str:
        lines = [f"{path.stat().st_size:>14,}  {path.name}" for path in self.files]
        card_source = "from the folder" if self.card_from_folder else "generated"
        lines.append(f"{len(self.card.encode()):>14,}  README.md ({card_source})")
        return "\n".join(lines)


def checkpoint_files(folder: Path) -> list[Path]:
    """The files of `folder` that belong to the checkpoint, sorted; training leftovers are left out."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and any(fnmatch.fnmatch(path.name, p) for p in CHECKPOINT_PATTERNS)
    )


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
    private: bool = False,
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id", help="org/name")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", help="branch to commit to (created if missing); default main")
    parser.add_argument("--base-model", action="append", default=[], help="base model id for the card (repeatable)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dry-run", action="store_true", help="print the files and the card; upload nothing")
    args = parser.parse_args(argv)
    card_options = {"base_models": args.base_model, "license": args.license}
    try:
        if args.dry_run:
            plan = plan_push(args.folder, args.repo_id, **card_options)
            print(f"would upload to {args.repo_id} ({'private' if args.private else 'public'}):")
            print(plan.describe())
            print("\n----- README.md -----")
            print(plan.card)
            return
        url = push_to_hub(args.folder, args.repo_id, args.private, args.revision, **card_options)
    except ValueError as error:
        parser.exit(2, f"llava-qwen3-push: error: {error}\n")
    print(f"pushed {args.folder} to {url}")


if __name__ == "__main__":
    main()
