"""A short summary of the last run (the end of `./run`): what data, how many items, every metric with
its n, its interval (or why there is none) and the baseline's score beside it, and a warning when
the model gives every test item the same prediction."""
from __future__ import annotations

import json
from pathlib import Path

from musicpetl.errors import InputError


def _read(path: Path, required: bool = False) -> dict:
    if not path.exists():
        if required:
            raise InputError(f"{path} not found: run the pipeline first (dvc repro)")
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _count(value) -> int | None:
    """A count as the stages write it: a number, or per-class/per-reason counts, or listed items."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict):
        parts = [_count(v) for v in value.values()]
        return sum(p for p in parts if p is not None) if parts else 0
    if isinstance(value, list):
        return len(value)
    return None


def _data_line(test: dict, split: dict, prepare: dict) -> str:
    parts = []
    sizes = {s: _count(split.get(s)) for s in ("train", "valid", "test")}
    kept = prepare.get("kept") if isinstance(prepare.get("kept"), dict) else {}
    if any(v is not None for v in sizes.values()):
        parts.append("split " + " / ".join(f"{s} {v}" for s, v in sizes.items() if v is not None))
    if kept:
        order = sorted(kept, key=lambda s: (("train", "valid", "test") + (s,)).index(s))
        parts.append("decoded " + " / ".join(f"{s} {_count(kept[s])}" for s in order))
    dropped = _count(split.get("dropped"))
    if dropped is not None:
        parts.append(f"{dropped} items dropped at split (data/splits/dropped.jsonl)")
    rejected = _count(prepare.get("rejected"))
    if rejected is not None:
        parts.append(f"{rejected} clips rejected at prepare (data/prepared/rejected.jsonl)")
    return f"  data: {test.get('dataset', '?')}" + ("; " + "; ".join(parts) if parts else "")


def _metric_line(name: str, test: dict, n) -> str:
    value = test[name]
    lo, hi = test.get(f"{name}_low"), test.get(f"{name}_high")
    how = test.get(f"{name}_interval", "")
    if lo is not None and hi is not None:
        kind = how.split(" ")[0] if how else ""
        flag = "; " + how if how.startswith(("degenerate", "percentile")) else (f", {kind}" if kind else "")
        ci = f"[95% CI {lo:.3f}-{hi:.3f}{flag}]"
    else:
        ci = f"[no interval: {how.removeprefix('none: ')}]" if how else ""
    base = test.get(f"baseline_{name}")
    base = f"  baseline {base:.3f}" if isinstance(base, (int, float)) else ""
    return f"  {name:>15}: {value:.3f}  n={n}  {ci}{base}"


def summary(metrics_dir: str | Path = "metrics") -> str:
    d = Path(metrics_dir)
    test = _read(d / "test.json", required=True)
    train = _read(d / "train.json")
    n = test.get("n", test.get("items", "?"))
    lines = [f"musicpetl: {train.get('backbone', '?')} + {test.get('method', '?')} on {test.get('task', '?')} "
             f"({n} test items)",
             _data_line(test, _read(d / "split.json"), _read(d / "prepare.json"))]
    for name, value in test.items():
        if (isinstance(value, float) and not name.endswith(("_low", "_high"))
                and not name.startswith("baseline_")):
            lines.append(_metric_line(name, test, n))
    if test.get("baseline"):
        lines.append(f"  baseline: the {test['baseline']} predicted for every test item")
    if test.get("constant_prediction"):
        lines.append(f"  WARNING: the model gives the same prediction for every one of the {n} test items: "
                     "its score is a constant predictor's, compare it with the baseline")
    corr = d / "correlate.json"
    if corr.exists():
        c = _read(corr)
        if "cka_last" in c and "cosine_last" in c:
            lines.append(f"  feature similarity to pre-trained (last layer): CKA {c['cka_last']:.3f}, "
                         f"cosine {c['cosine_last']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    try:
        print(summary())
    except InputError as err:
        print(f"[summary] error: {err}", file=sys.stderr)
        sys.exit(1)
