"""Table 2 from experiments: one row per backbone x system, one column per dataset-task metric.

Each cell is the primary metric of the task on the test set with its bootstrap interval, computed
from the run's stored test predictions (`compare.compare`, the same code as `musicpetl compare`).
Bold: the best value per backbone (and setting) per column. Mark: better than both full fine-tuning
and probing of the same backbone and setting, decided by paired bootstrap tests on the same test
items: a cell's p-value is the larger of its two tests' (an intersection-union test, both deltas
positive), and those p-values are Holm-corrected over all cells tested.

Baselines (README "Baselines": a network trained from scratch, an off-the-shelf estimator; the
spec's `kind` says which) are rows of their own group, after every foundation model's, labelled
by the spec ("Short-chunk CNN (scratch)", "madmom (no training)"): their cells show the value and
its interval, and take no part in the bold (best PETL system per backbone) or the mark.

Rows: experiments are grouped by `backbone.name`, `petl.method` and every param that varies
within some column (e.g. `backbone.num_layers` in a layer ablation, `petl.lora.rank` between LoRA
runs); params that do not change what is measured (paths, devices, batch size of inference,
bootstrap settings) are ignored, and a method's settings count only for that method.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from musicpetl.analysis.experiments import Experiment
from musicpetl.errors import InputError

# params that do not change a run's predictions, or that only locate its inputs
IGNORED = ("data.root", "data.overrides", "train.device", "train.num_workers", "eval.batch_size",
           "eval.bootstrap", "eval.alpha", "analysis")
ROW_KEYS = ("backbone.name", "petl.method")
COLUMN_KEYS = ("data.dataset", "data.task")
BASELINES = ("finetune", "probing")
# the paper's order; anything else after, alphabetically
BACKBONE_ORDER = ("musicfm-msd", "mert-v1-95m", "musicfm-tiny", "mert-tiny")
TASK_ORDER = ("tagging", "genre", "key", "tempo")
DATASET_ORDER = ("mtat", "mtg_jamendo", "gtzan", "giantsteps", "synth")
DATASET_NAMES = {"mtat": "MTAT", "mtg_jamendo": "MTG-Jamendo", "gtzan": "GTZAN", "giantsteps": "GiantSteps",
                 "synth": "synth"}
METRIC_NAMES = {"mAP": "mAP", "accuracy": "Acc.", "weighted_score": "Weighted Acc.", "acc1": "Acc. 1"}


@dataclass(frozen=True)
class Column:
    dataset: str
    task: str
    metric: str

    @property
    def label(self) -> str:
        return f"{DATASET_NAMES.get(self.dataset, self.dataset)} {self.task} ({METRIC_NAMES.get(self.metric, self.metric)})"

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.task}"


@dataclass(frozen=True)
class Row:
    backbone: str
    setting: tuple[tuple[str, Any], ...]  # the non-method params that vary (e.g. num_layers=3)
    method: str
    variant: tuple[tuple[str, Any], ...]  # the method's own settings that vary (e.g. rank=8)

    @property
    def block(self) -> tuple:
        """Rows compared with each other: same backbone and setting."""
        return (self.backbone, self.setting)

    @property
    def system(self) -> str:
        extra = ", ".join(f"{_short(k)}={v}" for k, v in self.variant)
        return f"{self.method} ({extra})" if extra else self.method

    @property
    def setting_label(self) -> str:
        return ", ".join(f"{_short(k)}={v}" for k, v in self.setting)

    @property
    def baseline(self) -> str | None:
        """The baseline kind ("scratch", "estimator") of the row's backbone, None for a foundation model."""
        return baseline_kind(self.backbone)

    @property
    def label(self) -> str:
        """What the table's system column shows: the method, or a baseline's name and kind."""
        if self.baseline is None:
            return self.system
        from musicpetl.backbones import BACKBONES

        extra = f", {self.system}" if self.variant else ""
        return f"{BACKBONES[self.backbone].label or self.backbone} ({BASELINE_KINDS[self.baseline]}{extra})"


@dataclass
class Cell:
    row: Row
    column: Column
    experiment: Experiment | None = None
    value: float | None = None
    low: float | None = None
    high: float | None = None
    missing: str | None = None         # why there is no value (None when there is one)
    n: int | None = None               # test items
    tests: dict[str, dict] = field(default_factory=dict)  # baseline -> {"delta", "p_value"}
    p_cell: float | None = None        # intersection-union p (max of the two), None when not tested
    p_holm: float | None = None
    better: bool = False               # better than both FT and probing after the correction
    best: bool = False                 # best of its backbone (and setting) in the column
    superseded: list[str] = field(default_factory=list)  # older runs of the same cell, not shown


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[Row, Column], Cell]
    alpha: float
    n_boot: int
    n_tested: int
    trainable: dict[Row, list[int]]    # trainable backbone params (metrics/train.json), per row
    run_size: dict[Row, list[int]]     # bytes of models/run.safetensors (DVC out size), per row
    experiments: list[Experiment]

    def cell(self, row: Row, column: Column) -> Cell | None:
        return self.cells.get((row, column))


BASELINE_GROUP = "Baselines"
BASELINE_KINDS = {"scratch": "scratch", "estimator": "no training"}


def baseline_kind(backbone: str) -> str | None:
    """The spec's kind of a baseline backbone; None for a foundation model (or a name this version
    does not know: an old run's backbone is shown as a backbone of its own)."""
    from musicpetl.backbones import BACKBONES

    spec = BACKBONES.get(backbone)
    return spec.kind if spec is not None and spec.baseline else None


def _short(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "petl" and len(parts) > 2:
        return ".".join(parts[2:])
    return ".".join(parts[1:]) if parts[0] in ("backbone", "train") and len(parts) > 1 else key


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED)


def relevant_params(exp: Experiment) -> dict[str, Any]:
    """The params that can change this run's predictions: a method's settings only for that method."""
    own = f"petl.{exp.method}."
    return {k: v for k, v in exp.params.items()
            if not _ignored(k) and (not k.startswith("petl.") or k == "petl.method" or k.startswith(own))}


def column_of(exp: Experiment) -> Column:
    from musicpetl.tasks import TASKS

    task = exp.task
    metric = TASKS[task].primary_metric if task in TASKS else (exp.metrics.get("test", {}).get("primary") or "score")
    return Column(exp.dataset, task, metric)


def _varying_keys(exps: list[Experiment]) -> set[str]:
    by_column: dict[Column, list[dict]] = {}
    for e in exps:
        by_column.setdefault(column_of(e), []).append(relevant_params(e))
    varying: set[str] = set()
    for params in by_column.values():
        for k in set().union(*params):
            # a method's setting varies only among runs of that method; other keys: absent counts as a value
            have = [p for p in params if k in p] if k.startswith("petl.") else params
            if len({repr(p.get(k)) for p in have}) > 1:
                varying.add(k)
    return varying - set(ROW_KEYS) - set(COLUMN_KEYS)


def row_of(exp: Experiment, varying: set[str]) -> Row:
    p = relevant_params(exp)
    own = f"petl.{exp.method}."
    setting = tuple((k, p.get(k)) for k in sorted(varying) if not k.startswith("petl."))
    variant = tuple((k, p[k]) for k in sorted(varying) if k.startswith(own) and k in p)
    return Row(exp.backbone, setting, exp.method, variant)


def _order(value, order) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _row_sort(row: Row):
    from musicpetl.petl import METHODS

    methods = tuple(METHODS)
    return (row.baseline is not None, _order(row.baseline, tuple(BASELINE_KINDS)), _order(row.backbone, BACKBONE_ORDER), [(k, _num(v)) for k, v in row.setting],
            _order(row.method, methods), [(k, _num(v)) for k, v in row.variant])


def _num(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order (written here: scipy has no Holm and
    statsmodels is not a dependency)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def check_same_test_set(column: Column, runs: list[tuple[Experiment, Any]]) -> None:
    """Every run in a column must be the column's task, scored on the same test items with the same
    labels; otherwise the column would compare different things. Names the experiments."""
    wrong_task = [e.name for e, pr in runs if pr.task != column.task]
    if wrong_task:
        raise InputError(f"column {column.id}: the stored predictions of {', '.join(wrong_task)} are not "
                         f"{column.task} predictions; refusing to put them in one column")
    groups: dict[tuple, list[str]] = {}
    for e, pr in runs:
        key = tuple(sorted(zip(pr.keys, (repr(lab) for lab in pr.labels))))
        groups.setdefault(key, []).append(e.name)
    if len(groups) > 1:
        sets = [(names, {k for k, _ in key}) for key, names in groups.items()]
        ref_names, ref = sets[0]
        parts = []
        for names, items in sets:
            diff = len(items ^ ref)
            how = f"{len(items)} items" + (f", {diff} differ from {ref_names[0]}'s" if names is not ref_names and diff
                                           else ", same items but different labels" if names is not ref_names else "")
            parts.append(f"{', '.join(names)} ({how})")
        raise InputError(f"column {column.id} mixes different test sets: " + " vs ".join(parts)
                         + "; paired tests need the same test items: select one set (names or --where)")


def build_table(exps: list[Experiment], predictions: dict[str, tuple[Any, str | None]], *,
                n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Table:
    """`predictions`: experiment rev (its commit, or "workspace") -> (Predictions or None, reason when None)."""
    from musicpetl.analysis.compare import compare

    usable = [e for e in exps if e.dataset and e.task and e.backbone and e.method]
    if not usable:
        raise InputError("no experiment with data.dataset, data.task, backbone.name and petl.method params")
    varying = _varying_keys(usable)
    cells: dict[tuple[Row, Column], Cell] = {}
    for e in sorted(usable, key=_recency):  # the newest run of a cell wins; older ones are noted
        row, col = row_of(e, varying), column_of(e)
        pred, reason = predictions.get(e.rev, (None, e.reason or "no predictions"))
        old = cells.get((row, col))
        cell = Cell(row, col, e, missing=None if pred is not None else reason)
        if old is not None:
            if old.missing is None and cell.missing is not None:  # a failed rerun does not hide a result
                old.superseded.append(f"{e.name} ({reason})")
                continue
            cell.superseded = old.superseded + [old.experiment.name]
        cells[(row, col)] = cell
    columns = sorted({c for _, c in cells}, key=lambda c: (_order(c.task, TASK_ORDER), _order(c.dataset, DATASET_ORDER)))
    rows = sorted({r for r, _ in cells}, key=_row_sort)

    for col in columns:
        present = [(c.experiment, predictions[c.experiment.rev][0]) for (r, cc), c in cells.items()
                   if cc == col and c.missing is None]
        check_same_test_set(col, present)
        blocks: dict[tuple, list[Cell]] = {}
        for (r, cc), c in cells.items():
            if cc == col and c.missing is None:
                blocks.setdefault(r.block, []).append(c)
        for block in blocks.values():
            # compare() finds the baselines by the name before "@"
            runs = [replace(predictions[c.experiment.rev][0], name=f"{c.row.system}@{c.experiment.name}")
                    for c in block]
            refs = () if block[0].row.baseline else BASELINES  # a baseline is compared with nothing
            result = {r["run"]: r for r in compare(runs, baselines=refs, n_boot=n_boot, alpha=alpha, seed=seed)}
            for c, run in zip(block, runs):
                res = result[run.name]
                c.n = len(run.keys)
                c.value, c.low, c.high = _finite(res[col.metric]), _finite(res["low"]), _finite(res["high"])
                if c.value is None:
                    c.missing = f"{col.metric} is undefined on these {c.n} test items"
                    continue
                # a test with no p-value (too few items for stats' bootstrap) is no test
                c.tests = {b: {"delta": _finite(res[f"delta_vs_{b}"]), "p_value": _finite(res[f"p_vs_{b}"])}
                           for b in BASELINES if f"delta_vs_{b}" in res}
            scored = [c for c in block if c.value is not None and not c.row.baseline]  # bold among PETL systems
            best = max((c.value for c in scored), default=None)
            for c in scored:
                c.best = c.value >= best - 1e-12
                done = [t for t in c.tests.values() if t["p_value"] is not None and t["delta"] is not None]
                if c.row.method not in BASELINES and len(done) == len(BASELINES):
                    both_up = all(t["delta"] > 0 for t in done)
                    c.p_cell = max(t["p_value"] for t in done) if both_up else 1.0

    tested = [c for c in cells.values() if c.p_cell is not None]
    for c, p in zip(tested, holm([c.p_cell for c in tested])):
        c.p_holm = p
        c.better = p < alpha
    trainable: dict[Row, list[int]] = {}
    run_size: dict[Row, list[int]] = {}
    for (row, _), c in cells.items():
        n = c.experiment.metrics.get("train", {}).get("trainable_backbone_params")
        size = (c.experiment.outs.get("models/run.safetensors") or {}).get("size")
        if n is not None and c.experiment.state == "success":
            trainable.setdefault(row, []).append(int(n))
        if size is not None and c.experiment.state == "success":
            run_size.setdefault(row, []).append(int(size))
    return Table(columns, rows, cells, alpha, n_boot, len(tested), trainable, run_size, usable)


def _finite(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _recency(e: Experiment):
    # the workspace is the newest state; commits and experiments by their time
    return (e.kind == "workspace", e.created.timestamp() if e.created else 0.0)
