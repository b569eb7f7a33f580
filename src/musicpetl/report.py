"""A short summary of the last run's metrics (the end of `./run`)."""
from __future__ import annotations

import json
from pathlib import Path


def summary(metrics_dir: str | Path = "metrics") -> str:
    d = Path(metrics_dir)
    test = json.loads((d / "test.json").read_text())
    train = json.loads((d / "train.json").read_text()) if (d / "train.json").exists() else {}
    lines = [f"musicpetl: {train.get('backbone', '?')} + {test['method']} on {test['task']} "
             f"({test['items']} test items)"]
    for name, value in test.items():
        if isinstance(value, float) and not name.endswith(("_low", "_high")):
            lo, hi = test.get(f"{name}_low"), test.get(f"{name}_high")
            ci = f"  [95% CI {lo:.3f}-{hi:.3f}]" if lo is not None else ""
            lines.append(f"  {name:>15}: {value:.3f}{ci}")
    corr = d / "correlate.json"
    if corr.exists():
        c = json.loads(corr.read_text())
        lines.append(f"  feature similarity to pre-trained (last layer): CKA {c['cka_last']:.3f}, cosine {c['cosine_last']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
