"""The package's layout rules that the code can check about itself: no import circle between its modules (arrows
point one way), the remote-code files import only torch, transformers, numpy, Pillow, the standard library and each
other, and every console command ends a user's mistake through `commands.exit_on_error`.

The import graph is read from the source with `ast`, not by importing: every module under src/llava_qwen3 (the vLLM
plugin included, which imports vLLM and so cannot be imported here), relative imports resolved, and imports inside
functions counted as much as those at the top of a module, since a deferred import still ties the two modules
together.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE_ROOT = ROOT / "src" / "llava_qwen3"
PACKAGE = PACKAGE_ROOT.name


def module_name(path: Path) -> str:
    """`llava_qwen3.inference.backend` for src/llava_qwen3/inference/backend.py (a package for its __init__.py)."""
    parts = [PACKAGE, *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that `tree` imports, at any depth: `from x import y` is the module x.y where there is
    one, else x (the module that defines y, or the package whose __init__ re-exports it)."""
    own_package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                names.add(submodule if submodule in modules else source)
    return {name for name in names if name in modules}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A module's own packages are left out: they are always mid-import
    when it runs, so importing them (`from .. import __version__`) closes no circle."""
    sources = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}
    graph = {}
    for module, path in sources.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = imported_modules(tree, module, path.name == "__init__.py", set(sources))
        graph[module] = {name for name in imported if name != module and not module.startswith(name + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as the list of modules around it (the first repeated at the end), or None."""
    visiting, done = [], set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return visiting[visiting.index(module) :] + [module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_every_module_of_the_package_parses_including_the_vllm_plugin():
    graph = import_graph()
    assert f"{PACKAGE}.vllm.model" in graph and f"{PACKAGE}.inference.backend" in graph


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_names_the_modules_around_a_circle():
    assert find_cycle({"p": {"p.a"}, "p.a": {"p.b"}, "p.b": set()}) is None
    assert find_cycle({"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p"}}) == ["p", "p.a", "p.b", "p"]


@pytest.mark.parametrize("folder", ["modeling", "processing"])
def test_remote_code_files_import_only_torch_transformers_and_each_other(folder):
    allowed = {"torch", "transformers", "numpy", "PIL", "__future__", *sys.stdlib_module_names}
    for path in (PACKAGE_ROOT / folder).glob("*_llava_qwen3.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.module and node.module.endswith("_llava_qwen3"), f"{path.name}: from .{node.module}"
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] in allowed, f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, f"{path.name} imports {alias.name}"


def console_commands() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: command -> "module:function"."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, re.M))


def test_every_console_command_ends_user_errors_through_exit_on_error():
    commands = console_commands()
    assert "llava-qwen3-serve" in commands and "llava-qwen3-eval" in commands
    for command, target in commands.items():
        module, function = target.split(":")
        path = PACKAGE_ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")
        main = next(
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name == function
        )
        calls = {
            node.func.id for node in ast.walk(main) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert "exit_on_error" in calls, f"{command} ({target}) does not run through commands.exit_on_error"
