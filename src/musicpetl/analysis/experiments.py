"""The repository's experiments as a report sees them: the workspace, baseline commits and `dvc exp`
refs (queued, running and failed ones included), read with DVC's own `experiments.show`; each with
its params, metrics, stored output sizes, state, and a way to its test predictions through DVC.

    exps = collect(".", where=["backbone.name=mert-tiny"])
    preds, reason = load_predictions(exps[0], ".")   # Predictions, or None and why not
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from musicpetl.errors import InputError

PREDICTIONS = "data/predictions.npz"
RUN_FILE = "models/run.safetensors"


@dataclass
class Experiment:
    name: str                 # the exp name, a commit's branch/tag or short sha, or "workspace"
    rev: str                  # the full git sha, or "workspace"
    kind: str                 # workspace | commit | experiment
    params: dict[str, Any]    # params.yaml flattened: {"backbone.name": "mert-tiny", ...}
    metrics: dict[str, dict]  # metrics file stem -> content: "test", "train", "correlate", ...
    outs: dict[str, dict]     # DVC out path -> {"hash": md5, "size": bytes}
    state: str = "success"    # success | failed | queued | running
    reason: str | None = None  # why there are no results (a failed run's error line)
    created: datetime | None = None
    baseline: str | None = None  # the commit an experiment was derived from
    duplicates: list[str] = field(default_factory=list)  # other names of the same run (same params and outputs)

    @property
    def method(self) -> str | None:
        return self.params.get("petl.method")

    @property
    def backbone(self) -> str | None:
        return self.params.get("backbone.name")

    @property
    def dataset(self) -> str | None:
        return self.params.get("data.dataset")

    @property
    def task(self) -> str | None:
        return self.params.get("data.task")

    @property
    def label(self) -> str:
        return self.name if self.kind != "commit" or self.name == self.rev[:7] else f"{self.name} ({self.rev[:7]})"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; empty dicts kept as values (written here: dvc's is internal API)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_where(conditions: list[str] | None) -> list[tuple[str, list[Any]]]:
    """["backbone.name=mert-tiny", "petl.method=lora,adapter"] -> [(key, accepted values)]; values
    are read as YAML (6 is the number 6), a comma separates alternatives."""
    out = []
    for cond in conditions or []:
        key, sep, value = cond.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--where {cond!r}: expected KEY=VALUE, e.g. backbone.name=mert-tiny")
        out.append((key.strip(), [yaml.safe_load(v.strip()) for v in value.split(",")]))
    return out


def matches(exp: Experiment, where: list[tuple[str, list[Any]]]) -> bool:
    for key, values in where:
        if key not in exp.params:
            return False
        have = exp.params[key]
        if not any(have == v or str(have) == str(v) for v in values):
            return False
    return True


def _file_data(results: dict | None) -> dict[str, dict]:
    """dvc's {path: {"data": {...}}} (or {"error": ...}) -> {path: data}."""
    return {path: r["data"] for path, r in (results or {}).items() if isinstance(r, dict) and r.get("data")}


def _failure_reason(executor) -> str:
    """The error line of a failed queued run's log (what `dvc queue logs NAME` prints)."""
    log = getattr(getattr(executor, "local", None), "log", None)
    text = ""
    if log and Path(log).is_file():
        text = Path(log).read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # the stage's own one-line error, else the last exception line of a traceback, else dvc's ERROR line
    for pattern in (r"^\[\w+\] (error|interrupted)\b", r"^[\w.]*(Error|Exception|Killed)\b", r"^ERROR\b"):
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1][:300]
    return "the run failed (no error line in its log; see `dvc queue logs <name>`)"


def _state_to_experiment(state, name: str, kind: str, baseline: str | None, executor=None) -> Experiment:
    data = state.data
    params_files = _file_data(data.params if data else None)
    params = flatten(params_files.get("params.yaml", {}))
    metrics = {Path(p).stem: v for p, v in _file_data(data.metrics if data else None).items()}
    outs = {p: {"hash": o.hash, "size": o.size} for p, o in (data.outs.items() if data else [])}
    status = getattr(executor, "state", None) or "success"
    reason = None
    if status == "failed":
        reason = _failure_reason(executor)
    elif status in ("queued", "running"):
        reason = f"{status}, not finished (`dvc queue status`)"
    elif state.error is not None:
        status, reason = "failed", f"dvc could not read it: {state.error.msg}"
    return Experiment(name=name, rev=state.rev, kind=kind, params=params, metrics=metrics, outs=outs,
                      state=status, reason=reason, created=data.timestamp if data else None, baseline=baseline)


def collect(repo: str | Path = ".", names: list[str] | None = None, where: list[str] | None = None,
            revs: list[str] | None = None, all_commits: bool = False) -> list[Experiment]:
    """Every experiment `dvc exp show` lists (workspace, the baseline commits `revs` (default HEAD)
    and the experiments derived from them), optionally narrowed to `names` (exp names, shas or
    their prefixes, branch/tag names, "workspace") and to params `where` (KEY=VALUE)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from scmrepo.exceptions import SCMError

    conditions = parse_where(where)
    try:
        dvc_repo = Repo(str(repo))
    except (NotDvcRepoError, SCMError) as err:
        raise InputError(f"{repo} is not a DVC repository with git history ({err})") from None
    with dvc_repo:
        if dvc_repo.scm.no_commits:
            return []
        states = dvc_repo.experiments.show(revs=revs or None, all_commits=all_commits, num=1)
    found: list[Experiment] = []
    for st in states:
        if st.rev == "workspace":
            found.append(_state_to_experiment(st, "workspace", "workspace", None))
            continue
        found.append(_state_to_experiment(st, st.name or st.rev[:7], "commit", None))
        for rng in st.experiments or []:
            head = rng.revs[0]  # an experiment's result is the tip of its range
            found.append(_state_to_experiment(head, rng.name or head.name or head.rev[:7], "experiment", st.rev,
                                              rng.executor))
    if any(e.kind == "experiment" and e.state == "running" and e.rev == "workspace" for e in found):
        # `dvc exp run` is rewriting the workspace (half old, half new files): the running experiment stands for it
        found = [e for e in found if e.kind != "workspace"]
    found = _merge_duplicates(found)
    if names:
        found = _select(found, names)
    return [e for e in found if matches(e, conditions)]


def _merge_duplicates(exps: list[Experiment]) -> list[Experiment]:
    """The same run listed twice (the workspace after `dvc exp run` applied it, or a commit that an
    experiment equals): same params and the same stored predictions. Named experiments win over
    commits, commits over the workspace."""
    rank = {"experiment": 0, "commit": 1, "workspace": 2}
    kept: dict[tuple, Experiment] = {}
    order: list[tuple] = []
    for e in sorted(exps, key=lambda e: rank[e.kind]):
        h = (e.outs.get(PREDICTIONS) or {}).get("hash")
        key = (h, repr(sorted(e.params.items()))) if h and e.state == "success" else (id(e),)
        if key in kept:
            kept[key].duplicates.append(e.name)
        else:
            kept[key] = e
            order.append(key)
    # back to dvc's order (workspace, commits, their experiments)
    position = {id(e): i for i, e in enumerate(exps)}
    return sorted((kept[k] for k in order), key=lambda e: position[id(e)])


def _select(exps: list[Experiment], names: list[str]) -> list[Experiment]:
    out, unknown = [], []
    for n in names:
        hit = [e for e in exps if n in (e.name, *e.duplicates) or (len(n) >= 4 and e.rev.startswith(n))]
        if not hit:
            unknown.append(n)
        out += [e for e in hit if e not in out]
    if unknown:
        known = ", ".join(e.name for e in exps) or "none"
        raise InputError(f"no experiment named {', '.join(unknown)} (known: {known})")
    return out


def load_predictions(exp: Experiment, repo: str | Path = "."):
    """(Predictions, None) from the experiment's DVC-tracked data/predictions.npz (workspace file,
    local DVC cache or the default remote), or (None, the reason it cannot be had)."""
    from musicpetl.analysis.compare import read_predictions

    if exp.state != "success":
        return None, exp.reason or exp.state
    if exp.kind == "workspace":
        path = Path(repo) / PREDICTIONS
        if not path.is_file():
            return None, f"{PREDICTIONS} is not in the workspace (run `dvc repro` or `dvc checkout`)"
        return read_predictions(str(path), name=exp.name), None
    if PREDICTIONS not in exp.outs:
        return None, f"{PREDICTIONS} is not an output of its pipeline"
    try:
        return read_predictions(exp.rev, repo=str(repo), name=exp.name), None
    except Exception as err:  # dvc raises many kinds (missing cache, no remote, path missing): all mean "not here"
        return None, _why_unreadable(exp, repo, err)


def _why_unreadable(exp: Experiment, repo, err: Exception) -> str:
    """A reason that says where DVC looked (dvc's own message for a missing cache object reads as if
    the path were not an output at all)."""
    from dvc.repo import Repo

    md5 = (exp.outs.get(PREDICTIONS) or {}).get("hash") or ""
    where = f"{PREDICTIONS} (md5 {md5[:8]})"
    fix = f"`dvc exp pull <git-remote> {exp.name}` (or `dvc pull` on its commit)"
    try:
        with Repo(str(repo)) as r:
            cached = bool(md5) and r.cache.local.exists(md5)
            remote = r.config["core"].get("remote")
    except Exception:  # noqa: BLE001 - the diagnosis is best effort; the original error still says something
        cached, remote = None, None
    if cached is False and not remote:
        return f"{where} is not in the local DVC cache and no default DVC remote is configured; fetch it with {fix}"
    if cached is False:
        return f"{where} is neither in the local DVC cache nor fetched from DVC remote '{remote}'; fetch it with {fix}"
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{where} could not be read through DVC ({msg[:200]}); fetch it with {fix}"
