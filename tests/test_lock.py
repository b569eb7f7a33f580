"""The environment is locked: uv.lock matches pyproject.toml, and the pins that broke a fresh install
(torchaudio 2.11.1 does not load against torch 2.11.0) are exact."""
from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".uv" / "bin" / "uv"

needs_uv = pytest.mark.skipif(not UV.exists(), reason="tools/setup.sh installs uv into .uv/ (./test always does)")


def _lock_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(UV), "lock", "--check", "--offline", "--python", shutil.which("python3.11") or "python3"],
                          cwd=folder, capture_output=True, text=True)


@needs_uv
def test_lock_matches_pyproject(tmp_path):
    for f in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / f, tmp_path / f)
    res = _lock_check(tmp_path)
    assert res.returncode == 0, res.stderr


@needs_uv
def test_lock_check_fails_when_pyproject_moves(tmp_path):
    # the check above can fail: a requirement the lock does not satisfy is caught
    text = (ROOT / "pyproject.toml").read_text()
    assert '"tqdm>=4.66"' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"tqdm>=4.66"', '"tqdm>=99"'))
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    assert _lock_check(tmp_path).returncode != 0


def test_torch_and_torchaudio_locked_together():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert versions["torch"] == "2.11.0" and versions["torchaudio"] == "2.11.0"
    wheels = [p for p in lock["package"] if p["name"] == "torchaudio"][0]["wheels"]
    assert wheels and all(w.get("hash", "").startswith("sha256:") for w in wheels)  # hashes recorded


def test_every_lock_entry_is_pinned_with_hashes():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    registry = [p for p in lock["package"] if "registry" in p.get("source", {})]
    assert len(registry) > 100
    unhashed = [p["name"] for p in registry if not all(w.get("hash") for w in p.get("wheels", []) + [p.get("sdist", {"hash": "x"})])]
    assert not unhashed, unhashed
