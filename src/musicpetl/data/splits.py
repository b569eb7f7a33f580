"""Seeded splits of datasets that lack a published one; counts per split and class, and the checks
a manifest must pass before anything trains on it."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from musicpetl.data.dataset import AUDIO_MISSING, UNLISTED
from musicpetl.errors import InputError


def seeded_split(keys: list[str], seed: int, valid: float, test: float) -> dict[str, str]:
    """key -> train/valid/test, shares `valid` and `test`, from a permutation of the sorted keys
    (so the split does not depend on listing order)."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise InputError(f"split shares must be in [0, 1) and sum below 1, got valid={valid}, test={test}")
    keys = sorted(keys)
    order = np.random.default_rng(int(seed)).permutation(len(keys))
    n_test, n_valid = int(round(test * len(keys))), int(round(valid * len(keys)))
    out = {}
    for rank, i in enumerate(order):
        out[keys[i]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return out


def split_counts(rows: list[dict]) -> dict[str, int]:
    c = Counter(r["split"] for r in rows)
    return {s: c.get(s, 0) for s in ("train", "valid", "test")}


# ------------------------------------------------------------------------------ checks before training

SPLITS = ("train", "valid", "test")


def class_counts(rows: list[dict], classes: list[str]) -> dict[str, dict[str, int]]:
    """Class name -> items per split; a multi-label item counts for each of its classes. {} for a
    task without classes (tempo)."""
    out = {c: dict.fromkeys(SPLITS, 0) for c in classes}
    for r in rows:
        labels = r["label"] if isinstance(r["label"], list) else [r["label"]]
        for i in labels:
            if classes and r["split"] in SPLITS:
                out[classes[int(i)]][r["split"]] += 1
    return out


def split_report(rows: list[dict], dropped: list[dict], classes: list[str]) -> dict:
    """Counts per split and class, the listed items per split with and without audio on disk, and
    the dropped items by reason (what data/splits/counts.json holds)."""
    kept = split_counts(rows)
    missing = Counter(d.get("split") for d in dropped if d["reason"] == AUDIO_MISSING)
    listed = Counter(d.get("split") for d in dropped if d.get("split") in SPLITS)
    listed.update(r["split"] for r in rows)
    present = {s: (round(1 - missing[s] / listed[s], 4) if listed[s] else None) for s in SPLITS}
    return {"splits": kept, "classes": class_counts(rows, classes),
            "listed": {s: listed[s] for s in SPLITS}, "audio_missing": {s: missing[s] for s in SPLITS},
            "present_share": present, "unlisted_audio": sum(d["reason"].startswith(UNLISTED) for d in dropped),
            "dropped_by_reason": dict(sorted(Counter(d["reason"] for d in dropped).items()))}


def check_splits(report: dict, *, min_present: float, allow_missing_classes: bool, where: str = "") -> None:
    """Refuse a manifest that would train or score garbage, with the numbers and the way out:
    an empty training split; a split with less than `min_present` of its listed items on disk
    (`data.min_present`); classes with validation or test items but none in training, unless
    `allow_missing_classes` (`data.allow_missing_classes`)."""
    where = f"{where}: " if where else ""
    if report["splits"]["train"] == 0:
        raise InputError(f"{where}the train split is empty ({_split_line(report)}): nothing to train on. Check "
                         "data.dataset / data.task and the dataset folder (data/splits/dropped.jsonl says why each "
                         "listed item was left out)")
    problems = []
    low = {s: v for s, v in report["present_share"].items() if v is not None and v < min_present}
    if low:
        shown = ", ".join(f"{s} {report['listed'][s] - report['audio_missing'][s]} of {report['listed'][s]} "
                          f"({100 * v:.1f} %)" for s, v in low.items())
        accept = math.floor(min(low.values()) * 100) / 100
        problems.append(f"audio on disk for too few of the listed items: {shown}, below data.min_present "
                        f"{min_present}. Add the missing files (reason '{AUDIO_MISSING}' in "
                        f"data/splits/dropped.jsonl), or accept the partial dataset with data.min_present: {accept} "
                        f"(dvc exp run -S data.min_present={accept})")
    unseen = {c: n for c, n in report["classes"].items() if n["train"] == 0 and (n["valid"] or n["test"])}
    if unseen and not allow_missing_classes:
        shown = ", ".join(f"{c} (valid {n['valid']}, test {n['test']})" for c, n in list(unseen.items())[:12])
        more = f" and {len(unseen) - 12} more" if len(unseen) > 12 else ""
        n_items = sum(n["valid"] + n["test"] for n in unseen.values())
        problems.append(f"{len(unseen)} classes have validation or test items but none in train: {shown}{more}; "
                        f"their {n_items} items cannot be predicted right, so model selection and test scores "
                        "mislead. Add training items of these classes, or accept it with "
                        "data.allow_missing_classes: true")
    if problems:
        raise InputError(f"{where}{_split_line(report)}; " + "; and ".join(problems))


def _split_line(report: dict) -> str:
    return "items train {train}, valid {valid}, test {test}".format(**report["splits"])


def format_report(report: dict) -> str:
    """The counts as a small table for the stage's output."""
    lines = ["split   listed  on disk  kept", *(
        f"{s:<7} {report['listed'][s]:>6}  {report['listed'][s] - report['audio_missing'][s]:>7}  "
        f"{report['splits'][s]:>4}" for s in SPLITS)]
    if report["classes"]:
        width = max(len(c) for c in report["classes"])
        lines.append(f"{'class':<{width}}  train  valid   test")
        lines += [f"{c:<{width}}  {n['train']:>5}  {n['valid']:>5}  {n['test']:>5}" for c, n in report["classes"].items()]
    lines += [f"dropped: {n} x {reason}" for reason, n in report["dropped_by_reason"].items()]
    return "\n".join(lines)
