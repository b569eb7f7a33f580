"""Every DVC stage's code deps are exactly the code its script can run.

For each stage in dvc.yaml, the static import closure of its script (imports inside functions
included, parent packages' __init__ included) within this repository must be covered by the
stage's `deps`, and every source file a stage lists must be in that closure (an over-listed dep
reruns the stage for nothing). A missing dep means DVC serves stale results after a code edit.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_files(name: str) -> list[Path]:
    """The module's file plus every parent package __init__ that importing it runs."""
    parts, out = name.split("."), []
    for i in range(1, len(parts) + 1):
        f = _module_file(".".join(parts[:i]))
        if f is not None:
            out.append(f)
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[Path]:
    """Files of this repository that `path` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_src = SRC in path.parents
    pkg = _module_name(path) if in_src else ""
    if in_src and path.name != "__init__.py":
        pkg = pkg.rpartition(".")[0]
    found: set[Path] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "musicpetl":
                found.update(_package_files(name))
            elif not in_src and (path.parent / f"{name}.py").is_file():  # a stage's local helper module
                found.add(path.parent / f"{name}.py")
    return found


def closure(script: Path) -> set[Path]:
    todo, seen = [script], {script}
    while todo:
        for f in _imports(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    m = re.search(r"python\s+(stages/\S+\.py)", stage["cmd"])
    assert m, f"stage cmd {stage['cmd']!r} does not run a stages/*.py script"
    return ROOT / m.group(1)


def _dep_paths(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_cover_its_code(name):
    stage = stages()[name]
    deps = _dep_paths(stage)
    code = sorted(str(f.relative_to(ROOT)) for f in closure(_script(stage)))
    missing = [f for f in code if not _covered(f, deps)]
    assert not missing, f"stage {name}: dvc.yaml deps miss code it runs: {missing}"


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_list_no_code_it_does_not_run(name):
    stage = stages()[name]
    code = {str(f.relative_to(ROOT)) for f in closure(_script(stage))}
    extra = []
    for d in _dep_paths(stage):
        p = ROOT / d
        if not (d.startswith("src/") or d.startswith("stages/")):
            continue
        files = [p] if p.is_file() else sorted(p.rglob("*.py"))
        extra += [str(f.relative_to(ROOT)) for f in files if str(f.relative_to(ROOT)) not in code]
    assert not extra, f"stage {name}: dvc.yaml deps list code the stage never imports (needless reruns): {extra}"


def test_closure_follows_function_level_and_relative_imports(tmp_path):
    # the analysis itself: a stage that imports musicpetl.stage reaches config through it
    files = {str(f.relative_to(ROOT)) for f in closure(ROOT / "stages" / "train.py")}
    assert "src/musicpetl/__init__.py" in files and "src/musicpetl/train.py" in files
    assert "src/musicpetl/tasks/genre.py" in files  # relative `from .genre import` in tasks/__init__
