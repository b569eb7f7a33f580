"""Run a pipeline stage: load params, call the library, print one summary line; errors become one
clear line and a non-zero exit (set MUSICPETL_DEBUG=1 for the traceback)."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from musicpetl.config import Params, load_params
from musicpetl.errors import MusicPetlError


def run_stage(name: str, fn: Callable[[Params], dict]) -> None:
    from musicpetl import lifeline

    t0 = time.time()
    lifeline.start()  # the stage stops when the DVC process that started it is gone
    try:
        params = load_params(os.environ.get("MUSICPETL_PARAMS", "params.yaml"))
        summary = fn(params)
    except MusicPetlError as err:  # the project's own errors: one line; anything else is a bug (traceback)
        if os.environ.get("MUSICPETL_DEBUG"):
            raise
        print(f"[{name}] error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        why = err if isinstance(err, lifeline.ParentGone) else "interrupted"
        print(f"[{name}] stopped: {why}; outputs left as they were", file=sys.stderr)
        sys.exit(130)
    print(f"[{name}] done in {time.time() - t0:.1f}s: {json.dumps(summary, sort_keys=True)}")
