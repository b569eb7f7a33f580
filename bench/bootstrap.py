"""Time of the test-set intervals (musicpetl.stats through musicpetl.evaluate.score) per task.

    PYTHONPATH=src .venv/bin/python bench/bootstrap.py                 # 1000 items, 1000 resamples
    PYTHONPATH=src .venv/bin/python bench/bootstrap.py --n 5329 --skip-generic   # MTAT's test set size
    PYTHONPATH=src .venv/bin/python bench/bootstrap.py --compare --n 5329        # the report's paired tests

--compare times `analysis.compare.compare` instead (what `musicpetl report` runs per table block):
three tagging runs of different skill on the same items (finetune, probing, lora), each an interval
and, for lora and probing, paired tests against the other baselines; the generic path's time is
estimated from one scikit-learn call (the calls it would make: n + n_boot + 1 per interval, twice
that per paired test) and is not run.

Synthetic test sets of --n items with a mediocre model (right about 60 % of the time), seed 0:
  genre    10 classes: accuracy, Wilson (no resampling)
  key      24 classes: weighted score, BCa over item indices (statistic: mean of per-item scores,
           scipy calls it once per resample and once per jack-knife sample); accuracy, Wilson
  tempo    acc1 / acc2, Wilson (the time is madmom scoring every item, not the interval)
  tagging  50 tags at 2-30 % prevalence: macro mAP and ROC-AUC, BCa over item indices
For tagging, two paths give the same intervals (tests/test_stats.py): the generic one calls
TaggingTask.metrics (scikit-learn) once per resample and once per jack-knife sample, n + n_boot
calls for each metric; the vectorised one (stats.macro_ap_auc_weighted) scores all resamples of a
batch at once. `score` uses the vectorised one; --skip-generic leaves the generic one out (at 5,329
items it runs for most of an hour). Times: wall clock of one call, after one warm-up call of the
point metrics (imports and caches), single process.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_case(task_name: str, n: int, rng: np.random.Generator):
    from musicpetl.tasks import make_task
    from musicpetl.tasks.tempo import tempo_target

    if task_name == "genre":
        task = make_task("genre", [f"g{i}" for i in range(10)])
        labels = rng.integers(0, 10, n)
        pred = np.where(rng.random(n) < 0.6, labels, rng.integers(0, 10, n))
        probs = np.eye(10)[pred] * 0.8 + 0.02
        return task, [int(x) for x in labels], probs, [int(x) for x in rng.integers(0, 10, 5 * n)]
    if task_name == "key":
        task = make_task("key")
        labels = rng.integers(0, 24, n)
        pred = np.where(rng.random(n) < 0.6, labels, (labels + 7) % 24)
        return task, [int(x) for x in labels], np.eye(24)[pred], [int(x) for x in rng.integers(0, 24, 5 * n)]
    if task_name == "tempo":
        task = make_task("tempo")
        labels = rng.uniform(60, 180, n).round(1)
        pred = np.where(rng.random(n) < 0.6, labels, labels * 1.3)
        probs = np.stack([tempo_target(min(b, 299)) for b in pred])
        return task, [float(x) for x in labels], probs, [float(x) for x in rng.uniform(60, 180, 5 * n)]
    task = make_task("tagging", [f"t{i}" for i in range(50)])
    y = rng.random((n, 50)) < np.linspace(0.02, 0.3, 50)
    probs = np.clip(y * 0.25 + rng.random((n, 50)) * 0.75, 0, 1)
    labels = [[int(t) for t in np.flatnonzero(r)] for r in y]
    train = [[int(t) for t in np.flatnonzero(r)] for r in rng.random((5 * n, 50)) < np.linspace(0.02, 0.3, 50)]
    return task, labels, probs, train


def compare_case(n: int, n_boot: int) -> dict:
    from musicpetl.analysis.compare import Predictions, compare

    task, labels, _, _ = make_case("tagging", n, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    y = np.stack([task.encode(lab) for lab in labels]).astype(float)
    keys = [f"t{i}" for i in range(n)]
    runs = [Predictions(name, keys, labels, np.clip(y * skill + rng.random(y.shape) * 0.75, 0, 1).astype(np.float32),
                        "tagging") for name, skill in (("finetune@a", 0.25), ("probing@b", 0.15), ("lora@c", 0.3))]
    t0 = time.perf_counter()
    rows = compare(runs, list(task.classes), n_boot=n_boot, seed=0)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    task.item_metric()(labels, runs[0].probs)
    per_call = time.perf_counter() - t0
    tests = sum(1 for r in rows for k in r if k.startswith("p_vs_"))
    calls = len(rows) * (n + n_boot + 1) + tests * 2 * (n + n_boot + 1)
    return {"n": n, "n_boot": n_boot, "runs": len(rows), "paired_tests": tests, "compare_seconds": round(seconds, 1),
            "sklearn_call_seconds": round(per_call, 3), "generic_calls": calls,
            "generic_estimate_seconds": round(calls * per_call), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="test items")
    ap.add_argument("--n-boot", type=int, default=1000, help="resamples")
    ap.add_argument("--skip-generic", action="store_true", help="leave out the generic tagging path")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--compare", action="store_true", help="time analysis.compare on tagging runs instead")
    args = ap.parse_args()
    if args.compare:
        res = compare_case(args.n, args.n_boot)
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(res, fh, indent=2, default=float)
        return

    from musicpetl.evaluate import score
    from musicpetl.stats import metric_interval

    rows = []
    for name in ("genre", "key", "tempo", "tagging"):
        task, labels, probs, train = make_case(name, args.n, np.random.default_rng(0))
        task.metrics(labels, probs)  # warm-up
        t0 = time.perf_counter()
        res = score(task, labels, probs, n_boot=args.n_boot, seed=0, train_labels=train)
        t = time.perf_counter() - t0
        metrics = [m for m, v in res.items() if isinstance(v, float) and f"{m}_interval" in res]
        rows.append({"task": name, "path": "score()", "metrics": ", ".join(f"{m} ({res[m + '_interval']})" for m in metrics),
                     "seconds": round(t, 3)})
        print(json.dumps(rows[-1]), flush=True)
        if name == "tagging" and not args.skip_generic:
            for m in ("mAP", "ROC-AUC"):
                t0 = time.perf_counter()
                iv = metric_interval(lambda lab, p, m=m: task.metrics(list(lab), np.asarray(p))[m], labels, probs,
                                     n_boot=args.n_boot, seed=0)
                t = time.perf_counter() - t0
                assert abs(iv.low - res[f"{m}_low"]) < 1e-9 and abs(iv.high - res[f"{m}_high"]) < 1e-9, (iv, res)
                rows.append({"task": name, "path": "generic", "metrics": f"{m} ({iv.note})", "seconds": round(t, 3)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.n} items, {args.n_boot} resamples\n\n| task | path | metrics (interval) | seconds |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['path']} | {r['metrics']} | {r['seconds']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "n_boot": args.n_boot, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
