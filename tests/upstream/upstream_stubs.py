"""Stand-ins for the modules transformers' common test files import but its source distribution leaves out.

Each stand-in is an empty mixin or an empty table: a test that needs what is missing cannot run here, and
test_transformers_suites.py lists those tests with this reason instead of skipping them silently.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from PIL import Image, ImageDraw

# (module inside the upstream tests package, names it must provide)
MISSING_MODULES = {
    "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
    "utils.test_configuration_utils": {"config_common_kwargs": {}},  # read only by non-composite configs
}


def local_images(folder: Path):
    """`url_to_local_path` of transformers' CI (its utils/fetch_hub_objects_for_ci.py, also not shipped): Hub URLs
    of test images become pictures drawn here, under the URL's file name; other URLs (video, audio, which this
    model does not take) are returned as they are."""

    def url_to_local_path(url: str, return_url_if_not_found: bool = True) -> str:
        name = url.rsplit("/", 1)[-1]
        if not name.lower().endswith((".png", ".jpg", ".jpeg")):
            return url
        path = folder / name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (640, 480), (90, 140, 200))
            ImageDraw.Draw(image).ellipse((120, 80, 420, 380), fill=(230, 60, 40))
            image.save(path)
        return str(path)

    return url_to_local_path


def install_stubs(package: str, image_folder: Path) -> None:
    """Registers the stand-ins as submodules of `package`, and the CI helper module as a top-level one."""
    helper = types.ModuleType("fetch_hub_objects_for_ci")
    helper.url_to_local_path = local_images(image_folder)
    sys.modules.setdefault("fetch_hub_objects_for_ci", helper)  # how 5.x imports it
    if "utils" not in sys.modules:  # 4.x imports it as utils.fetch_hub_objects_for_ci
        utils = types.ModuleType("utils")
        utils.__path__ = []
        utils.fetch_hub_objects_for_ci = helper
        sys.modules["utils"] = utils
        sys.modules["utils.fetch_hub_objects_for_ci"] = helper
    for dotted, names in MISSING_MODULES.items():
        parts = dotted.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join([package, *parts[:depth]])
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__path__ = []  # a package, so that deeper stand-ins can hang below it
                sys.modules[name] = module
        for attribute, value in names.items():
            setattr(sys.modules[f"{package}.{dotted}"], attribute, value)
