"""Pushing to the Hub: the dry run, the calls against a Hub stand-in on loopback, loading by repo id offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub
from helpers import run_fresh_python

from llava_qwen3.hub import plan_push

pytestmark = pytest.mark.slow
TOKEN = "hf_test_token_never_printed"


def _push(arguments, endpoint=None):
    # Online mode for the stand-in; without one, a closed loopback port, so no call can ever leave the machine.
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
    env["HF_ENDPOINT"] = endpoint or "http://127.0.0.1:9"
    command = [str(Path(sys.executable).parent / "llava-qwen3-push"), *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def checkpoint_with_leftovers(tiny_clip, tmp_path):
    """The tiny checkpoint plus what training leaves beside it, which must not be uploaded."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_clip[0], folder)
    saved = sorted(path.name for path in folder.iterdir())
    (folder / "optimizer.pt").write_bytes(b"state")
    (folder / ".DS_Store").write_bytes(b"x")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_text("log")
    (folder / "train_results.json").write_text(json.dumps({"train_loss": 0.1234567, "epoch": 1.0}))
    (folder / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": "/home/me/runs/x"}))
    (folder / "training_config.json").write_text(json.dumps({"data": "/home/me/private/train.json"}))
    (folder / "api_keys.json").write_text(json.dumps({"openai": "sk-secret"}))
    (folder / "notes.py").write_text("# a stray script")
    return folder, sorted(saved + ["train_results.json"])


def test_dry_run_lists_the_checkpoint_files_and_the_card(checkpoint_with_leftovers):
    folder, expected = checkpoint_with_leftovers
    result = _push([str(folder), "org/tiny", "--dry-run", "--base-model", "Qwen/Qwen3-0.6B"])
    assert result.returncode == 0, result.stderr
    listing, card = result.stdout.split("----- README.md -----")
    assert listing.startswith("would upload to org/tiny (private if new):")
    listed = [line.split()[1] for line in listing.splitlines()[1:] if line.strip()]
    assert listed == expected + ["README.md"]
    assert "config.json  (config)" in listing and "modeling_llava_qwen3.py  (remote code)" in listing
    front_matter = yaml.safe_load(card.strip().split("---\n")[1])
    assert front_matter["base_model"] == ["Qwen/Qwen3-0.6B"] and front_matter["pipeline_tag"] == "image-text-to-text"
    assert "## Training" in card and "| train_loss | 0.1235 |" in card
    assert not (folder / "README.md").exists(), "a dry run writes nothing"


def test_push_makes_the_calls_and_the_pushed_files_load_from_the_hub_cache(checkpoint_with_leftovers, tmp_path):
    folder, expected = checkpoint_with_leftovers
    with FakeHub(token=TOKEN) as hub:
        result = _push([str(folder), "org/tiny", "--revision", "dev"], endpoint=hub.url)
        public = _push([str(folder), "org/open", "--public"], endpoint=hub.url)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert not any(TOKEN.encode() in path.read_bytes() for path in folder.rglob("*") if path.is_file())

    assert hub.is_private("org/tiny"), "a new repository is private unless --public is given"
    assert public.returncode == 0 and not hub.is_private("org/open")
    assert ("org/tiny", "dev") in hub.branches
    assert len(hub.commits) == 2 and hub.commits[0]["revision"] == "dev"
    uploaded = hub.files[("org/tiny", "dev")]
    assert sorted(uploaded) == sorted(expected + ["README.md"])
    for name in expected:
        assert uploaded[name] == (folder / name).read_bytes(), name
    assert any(r["path"].endswith(".git/info/lfs/objects/batch") for r in hub.requests)
    assert [r for r in hub.requests if r["method"] == "PUT"], "the weights go through the large-file path"
    api_calls = [r for r in hub.requests if r["path"].startswith("/api/")]
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in api_calls)

    # Lay the pushed files out the way snapshot_download leaves them, and load by repo id, offline.
    cache = tmp_path / "hub-cache"
    commit = hub.commits[0]["oid"]
    snapshot = cache / "models--org--tiny" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in uploaded.items():
        (snapshot / name).write_bytes(content)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text(commit)
    output = run_fresh_python(
        """
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
        model = AutoModelForImageTextToText.from_pretrained("org/tiny", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("org/tiny", trust_remote_code=True)
        image = Image.new("RGB", (40, 30), "green")
        inputs = processor(images=[image], text="<image> what?", return_tensors="pt")
        new_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] - inputs["input_ids"].shape[1]
        print("generated", new_tokens)
        pipe = pipeline("image-text-to-text", model="org/tiny", trust_remote_code=True)
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
        answer = pipe(text=messages, max_new_tokens=3, return_full_text=False)[0]["generated_text"]
        print("pipeline", type(answer).__name__)
        """,
        cwd=tmp_path,
        env={"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")},
    )
    assert "generated 3" in output and "pipeline str" in output


def test_bad_input_is_refused_before_any_call(tmp_path, tiny_clip):
    (tmp_path / "empty").mkdir()
    assert _push([str(tmp_path / "empty"), "org/x", "--dry-run"]).returncode == 2
    with pytest.raises(ValueError, match="holds no LLaVA-Qwen3 config.json"):
        plan_push(tmp_path / "empty", "org/x")
    with pytest.raises(ValueError, match="must look like 'org/name'"):
        plan_push(tiny_clip[0], "no-slash")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_clip[0], partial)
    (partial / "modeling_llava_qwen3.py").unlink()
    with FakeHub(token=TOKEN) as hub:
        result = _push([str(partial), "org/x"], endpoint=hub.url)
    assert result.returncode == 2 and "lacks the remote-code files modeling_llava_qwen3.py" in result.stderr
    assert hub.requests == []


def test_an_unreachable_hub_or_a_refused_token_is_one_line_without_the_token(tiny_clip):
    unreachable = _push([str(tiny_clip[0]), "org/x"])  # a closed loopback port
    with FakeHub(token="another-token") as hub:
        refused = _push([str(tiny_clip[0]), "org/x"], endpoint=hub.url)
    for result in (unreachable, refused):
        assert result.returncode == 2
        assert result.stderr.startswith("llava-qwen3-push: error: ") and "Traceback" not in result.stderr
        assert TOKEN not in result.stdout + result.stderr
    assert "Connection refused" in unreachable.stderr
    assert "401" in refused.stderr
