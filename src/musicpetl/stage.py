"""Run a pipeline stage: load params, call the library, print one summary line; errors become one
clear line and a non-zero exit (set MUSICPETL_DEBUG=1 for the traceback)."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from musicpetl.config import Params, load_params

# errors a user can act on; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, RuntimeError, KeyError, OSError)


def run_stage(name: str, fn: Callable[[Params], dict]) -> None:
    t0 = time.time()
    try:
        params = load_params(os.environ.get("MUSICPETL_PARAMS", "params.yaml"))
        summary = fn(params)
    except USER_ERRORS as err:
        if os.environ.get("MUSICPETL_DEBUG"):
            raise
        print(f"[{name}] error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"[{name}] done in {time.time() - t0:.1f}s: {json.dumps(summary, sort_keys=True)}")
