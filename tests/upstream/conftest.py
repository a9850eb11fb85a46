"""Makes transformers' own common test suites importable as `transformers_upstream_tests`.

They are not copied into this repository: the source distribution of the installed transformers version is fetched
from the package index with `pip download` the first time (into tests/upstream/.fetched/, which git ignores) and its
`tests/*.py` files are unpacked as a package. The sdist holds the top-level common files (test_modeling_common,
test_configuration_common, test_processing_common, ...) but not the subpackages some of them import
(`exporters`, `generation`, `utils`, `distributed_testing_utils`); `upstream_stubs.py` stands in for those imports
with empty mixins, and the tests that would need them are listed in test_transformers_suites.py with that reason.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers
from upstream_stubs import install_stubs

FETCHED = Path(__file__).parent / ".fetched"
PACKAGE = "transformers_upstream_tests"


def fetch_upstream_tests(version: str) -> Path:
    """The folder holding `transformers_upstream_tests` for `version`, downloaded and unpacked once."""
    root = FETCHED / version
    package = root / PACKAGE
    if (package / "__init__.py").is_file():
        return root
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        subprocess.run([*command, "--dest", scratch, f"transformers=={version}"], check=True, timeout=600)
        archive = next(Path(scratch).glob("transformers-*.tar.gz"))
        FETCHED.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=FETCHED))
        with tarfile.open(archive) as tar:
            prefix = f"transformers-{version}/tests/"
            for member in tar.getmembers():
                name = member.name
                relative = name[len(prefix) :]
                if member.isfile() and name.startswith(prefix) and relative.endswith(".py") and "/" not in relative:
                    member.name = f"{PACKAGE}/{relative}"
                    tar.extract(member, staging, filter="data")
        (staging / PACKAGE / "__init__.py").write_text("")
        staging.rename(root)  # whole or not at all: a half-unpacked folder is never left under its final name
    return root


sys.path.insert(0, str(fetch_upstream_tests(transformers.__version__)))
install_stubs(PACKAGE, FETCHED / "images")
assert importlib.util.find_spec(f"{PACKAGE}.test_modeling_common") is not None
