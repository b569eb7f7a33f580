#!/usr/bin/env bash
# Set up .venv exactly as uv.lock says (every package, transitive ones included, pinned with hashes).
# Both ./run and ./test call this; it installs the same environment (dev extras included), so
# either after the other installs nothing. A no-op in well under a second when nothing changed.
#   refresh the lock after editing pyproject.toml:  tools/setup.sh --relock   (uv lock --upgrade)
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9  # the locking tool itself, pinned
export UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ "$(.uv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "[setup] installing uv $UV_VERSION into .uv/"
  rm -rf .uv
  "$py" -m venv .uv
  .uv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
if [ "${1:-}" = "--relock" ]; then
  .uv/bin/uv lock --upgrade --python "$py"
  shift
fi
# --locked: fail (instead of silently re-resolving) when uv.lock does not match pyproject.toml
# --compile-bytecode: .pyc for every installed module at install time (~25 s once, a no-op after);
# else, where PYTHONDONTWRITEBYTECODE is set, every process (each DVC stage a test runs) compiles
# torch & co. from source again: the suite took 22 min on a fresh clone instead of ~12
.uv/bin/uv sync --locked --all-extras --python "$py" --quiet --compile-bytecode
