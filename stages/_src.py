"""Put this checkout's src/ first on sys.path: a stage runs the code of the workspace it runs in
(a queued `dvc exp run` works in its own copy of the repository), whatever musicpetl is installed."""
import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
