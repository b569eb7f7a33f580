"""`musicpetl report`: the paper's Table 2 (+ Figures 2 and 3 and the section 5.3 feature-similarity
figure) from the repository's experiments, written under reports/:

    report.md        Table 2 as markdown, its caption, missing cells with their reasons, figures
    report.html      the same as one self-contained page (inline CSS, figures as data: URIs)
    figures/*.png    the figures the markdown links
    report.json      every cell: value, interval, paired tests, Holm-corrected p, bold/mark

Experiments are what `dvc exp show` lists (workspace, baseline commits, `dvc exp` refs, failed and
queued ones); predictions come through DVC (`compare.read_predictions`: local cache or remote).
Figure 2 is read from reports/complexity.json, written by `musicpetl complexity` (timing.py).
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from musicpetl.analysis.experiments import Experiment, collect, load_predictions
from musicpetl.analysis.table import BASELINE_GROUP, Cell, Column, Row, Table, build_table
from musicpetl.errors import InputError

MARK = "†"
MISSING = "—"


@dataclass
class Figure:
    name: str       # file stem under figures/
    title: str
    caption: str
    png: bytes


@dataclass
class Report:
    table: Table
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # numbered reasons of missing cells
    note_of: dict = field(default_factory=dict)            # (row, column) -> note number
    complexity: dict | None = None
    command: str = "musicpetl report"


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _span(values: list[int], fmt) -> str:
    if not values:
        return MISSING
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def _too_few() -> str:
    from musicpetl import stats

    least = getattr(stats, "MIN_ITEMS", None)
    return (f"no interval and no test on fewer than {least} test items" if least
            else "no interval and no test where the bootstrap gives none")


def caption(t: Table) -> str:
    pct = round(100 * (1 - t.alpha))
    tested = (f"all {t.n_tested} cell{'s' if t.n_tested != 1 else ''} tested" if t.n_tested
              else "the cells tested (none here: no system had both an FT and a probing run beside it)")
    return (f"Table 2. Each column's primary test metric with its {pct} % bootstrap interval over the test items "
            f"({t.n_boot} resamples; as `musicpetl compare`). **Bold**: best per backbone (and setting) per "
            f"column. {MARK} (underlined in the HTML page): better than both full fine-tuning (finetune) and "
            f"probing of the same backbone and setting, by paired bootstrap tests on the same test items "
            f"({t.n_boot} resamples, two-sided): both differences positive, the cell's p-value the larger of the "
            f"two (intersection-union test), Holm-corrected for multiple comparisons over {tested}, at "
            f"α = {t.alpha:g}; {_too_few()}. {MISSING}: no result (the reason is listed below the table); "
            f"a missing cell is never a zero. Trainable params: backbone parameters that train "
            f"(metrics/train.json; the head is not counted, as in the paper's Table 3). Stored run: size of "
            f"models/run.safetensors (DVC out); a range where the row's runs differ (e.g. head sizes)."
            + _baselines_note(t))


def _group(row: Row) -> str:
    """The table's first column: the backbone, or the Baselines group for a baseline's row."""
    return BASELINE_GROUP if row.baseline else row.backbone


def _baselines_note(t: Table) -> str:
    if not any(r.baseline for r in t.rows):
        return ""
    return (f" {BASELINE_GROUP}: systems without a foundation model, on the same test items: networks trained "
            f"from scratch (scratch) and off-the-shelf estimators evaluated as they come (no training); shown "
            f"with their intervals, left out of the bold and of the {MARK} tests.")


def _cell_text(report: Report, row: Row, col: Column, markdown: bool) -> str:
    c = report.table.cell(row, col)
    if c is None:
        return MISSING
    if c.value is None:
        n = report.note_of.get((row, col))
        return f"{MISSING} [{n}]" if n else MISSING
    v = f"**{_fmt(c.value)}**" if c.best and markdown else _fmt(c.value)
    return f"{v} ({_interval(c)})" + (f" {MARK}" if c.better else "")


def _interval(c: Cell) -> str:
    return f"{_fmt(c.low)}–{_fmt(c.high)}" if c.low is not None and c.high is not None else f"no interval, n={c.n}"


def _has_setting(t: Table) -> bool:
    return any(r.setting for r in t.rows)


def header(t: Table) -> list[str]:
    return (["backbone"] + (["setting"] if _has_setting(t) else []) + ["system"] + [c.label for c in t.columns]
            + ["trainable params", "stored run"])


def markdown_table(report: Report) -> str:
    from tabulate import tabulate  # a dependency of dvc

    t = report.table
    rows = []
    for r in t.rows:
        rows.append([_group(r)] + ([r.setting_label] if _has_setting(t) else []) + [r.label]
                    + [_cell_text(report, r, c, True) for c in t.columns]
                    + [_span(t.trainable.get(r, []), _count), _span(t.run_size.get(r, []), _bytes)])
    return tabulate(rows, headers=header(t), tablefmt="pipe", disable_numparse=True)


def _number_missing(report: Report) -> None:
    for r in report.table.rows:
        for col in report.table.columns:
            c = report.table.cell(r, col)
            if c is not None and c.value is None:
                report.notes.append(f"{_group(r)} {r.label}{' [' + r.setting_label + ']' if r.setting else ''}, "
                                    f"{col.label} — {c.experiment.label}: {c.missing}")
                report.note_of[(r, col)] = len(report.notes)


def render_markdown(report: Report) -> str:
    t = report.table
    out = ["# Results from this repository's experiments", "",
           f"Generated by `{report.command}`: {len(t.experiments)} experiments, {len(t.rows)} systems, "
           f"{len(t.columns)} dataset-task column{'s' if len(t.columns) != 1 else ''}.", "", markdown_table(report), "", caption(t), ""]
    if report.notes:
        out += ["Missing cells:", ""] + [f"- [{i}] {n}" for i, n in enumerate(report.notes, 1)] + [""]
    for f in report.figures:
        out += [f"## {f.title}", "", f"![{f.title}](figures/{f.name}.png)", "", f.caption, ""]
        if f.name == "complexity":  # the numbers under their figure
            out += [complexity_markdown(report.complexity), ""]
    out += ["## Experiments", "", experiments_markdown(t), ""]
    return "\n".join(out)


def experiments_rows(t: Table) -> list[list[str]]:
    shown = {id(c.experiment): c for c in t.cells.values()}
    superseded = {n.split(" (")[0] for c in t.cells.values() for n in c.superseded}
    rows = []
    for e in t.experiments:
        where = ("superseded by a newer run of the same cell" if e.name in superseded and id(e) not in shown
                 else "in the table" if id(e) in shown else "")
        rows.append([e.label, e.kind, e.rev[:7] if e.rev != "workspace" else "", e.state, e.backbone or "",
                     e.method or "", f"{e.dataset}/{e.task}", ", ".join(e.duplicates), where])
    return rows


EXP_HEADER = ["experiment", "kind", "rev", "state", "backbone", "method", "dataset/task", "same run as", "use"]


def experiments_markdown(t: Table) -> str:
    from tabulate import tabulate

    return tabulate(experiments_rows(t), headers=EXP_HEADER, tablefmt="pipe", disable_numparse=True)


COMPLEXITY_HEADER = ["method", "trainable backbone params", "step (ms)", "step / FT", "inference (ms)",
                     "inference / FT", "peak memory (MiB)", "peak / FT"]


def complexity_rows(res: dict) -> list[list[str]]:
    def num(v, fmt):
        return MISSING if v is None else fmt.format(v)

    from musicpetl.analysis.figures import method_order

    rows = []
    for m in method_order(res["methods"]):
        r = res["methods"][m]
        if "error" in r:
            rows.append([m] + [MISSING] * 6 + [r["error"]])
            continue
        rows.append([m, _count(r["trainable"]), num(1000 * r["step_s"], "{:.1f}"), num(r.get("step_ratio"), "{:.2f}"),
                     num(1000 * r["infer_s"], "{:.1f}"), num(r.get("infer_ratio"), "{:.2f}"),
                     num(r.get("peak_mib"), "{:.0f}"), num(r.get("peak_ratio"), "{:.2f}")])
    return rows


def _complexity_intro(bb: str, meta: dict) -> str:
    return (f"{bb}, {meta.get('num_layers')} layers, batch {meta.get('batch')} x {meta.get('seconds')} s, on "
            f"{meta.get('device', '?')} (torch {meta.get('torch', '?')}; medians of {meta.get('steps')} steps and "
            f"{meta.get('forwards')} forwards x {meta.get('rounds')} rounds):")


def complexity_markdown(data: dict) -> str:
    from tabulate import tabulate

    out = []
    for bb, res in data.items():
        out += [_complexity_intro(bb, res.get("meta", {})), "",
                tabulate(complexity_rows(res), headers=COMPLEXITY_HEADER, tablefmt="pipe", disable_numparse=True), ""]
    return "\n".join(out)


CSS = """
body { font-family: sans-serif; margin: 1.5em 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eee; } td.name { text-align: left; }
tr.block td { border-top: 2px solid #555; }
td.best .v { font-weight: bold; }
td.better .v { text-decoration: underline; }
td.missing { color: #999; text-align: center; }
.ci { color: #666; font-size: 0.9em; }
.mark { color: #b00; }
p.caption { max-width: 1100px; font-size: 0.85em; line-height: 1.35; }
ol.notes { font-size: 0.82em; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _html_cell(report: Report, row: Row, col: Column) -> str:
    c: Cell | None = report.table.cell(row, col)
    if c is None:
        return f'<td class="missing" title="not run">{MISSING}</td>'
    if c.value is None:
        n = report.note_of.get((row, col))
        return f'<td class="missing" title="{_e(c.missing)}">{MISSING} <sup>[{n}]</sup></td>'
    cls = " ".join(k for k, on in (("best", c.best), ("better", c.better)) if on)
    tests = "; ".join(f"vs {b}: Δ={t['delta']:+.3f}, p={'none (too few items)' if t['p_value'] is None else format(t['p_value'], '.3g')}"
                      for b, t in c.tests.items() if t["delta"] is not None)
    if c.p_holm is not None:
        tests += f"; Holm p={c.p_holm:.3g}"
    title = f"{c.experiment.label}" + (f"; {tests}" if tests else "")
    mark = f' <span class="mark">{MARK}</span>' if c.better else ""
    return (f'<td class="{cls}" title="{_e(title)}"><span class="v">{_fmt(c.value)}</span> '
            f'<span class="ci">({_e(_interval(c))})</span>{mark}</td>')


def render_html(report: Report) -> str:
    t = report.table
    head = "".join(f"<th>{_e(h)}</th>" for h in header(t))
    body, last_block = [], None
    for r in t.rows:
        cls = ' class="block"' if last_block is not None and r.block != last_block else ""
        last_block = r.block
        tds = [f'<td class="name">{_e(_group(r))}</td>']
        if _has_setting(t):
            tds.append(f'<td class="name">{_e(r.setting_label)}</td>')
        tds.append(f'<td class="name">{_e(r.label)}</td>')
        tds += [_html_cell(report, r, c) for c in t.columns]
        tds += [f"<td>{_e(_span(t.trainable.get(r, []), _count))}</td>",
                f"<td>{_e(_span(t.run_size.get(r, []), _bytes))}</td>"]
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    cap = _e(caption(t)).replace("**Bold**", "<b>Bold</b>")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>musicpetl report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>Results from this repository's experiments</h1>",
             f"<p>Generated by <code>{_e(report.command)}</code>: {len(t.experiments)} experiments, "
             f"{len(t.rows)} systems, {len(t.columns)} dataset-task column{'s' if len(t.columns) != 1 else ''}.</p>",
             f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>",
             f'<p class="caption">{cap}</p>']
    if report.notes:
        parts.append('<p>Missing cells:</p><ol class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes)
                     + "</ol>")
    for f in report.figures:
        data = base64.b64encode(f.png).decode("ascii")
        parts.append(f"<h2>{_e(f.title)}</h2><figure><img alt=\"{_e(f.title)}\" src=\"data:image/png;base64,{data}\">"
                     f'<figcaption><p class="caption">{_e(f.caption)}</p></figcaption></figure>')
        if f.name == "complexity":
            parts.append(_html_complexity(report.complexity))
    exp_rows = "".join("<tr>" + "".join(f'<td class="name">{_e(v)}</td>' for v in row) + "</tr>"
                       for row in experiments_rows(t))
    parts.append("<h2>Experiments</h2><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in EXP_HEADER)
                 + f"</tr></thead><tbody>{exp_rows}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_complexity(data: dict) -> str:
    out = []
    for bb, res in data.items():
        rows = "".join("<tr>" + "".join(f'<td class="{"name" if i == 0 else ""}">{_e(v)}</td>' for i, v in enumerate(row))
                       + "</tr>" for row in complexity_rows(res))
        out.append(f"<p>{_e(_complexity_intro(bb, res.get('meta', {})))}</p><table><thead><tr>"
                   + "".join(f"<th>{_e(h)}</th>" for h in COMPLEXITY_HEADER) + f"</tr></thead><tbody>{rows}</tbody></table>")
    return "".join(out)


def complexity_caption(data: dict) -> str:
    meta = next(iter(data.values())).get("meta", {})
    return ("Figure 2. Training-step time, inference time and peak training memory of every method relative to "
            "full fine-tuning (FT), measured side by side in one process on the same device "
            f"({meta.get('device', '?')}); medians of {meta.get('steps')} timed steps and {meta.get('forwards')} "
            f"forwards after a warm-up, over {meta.get('rounds')} interleaved rounds. A value above 1 is slower "
            "(or larger) than FT. Probing's step is a no-grad backbone forward plus the head's step (what it costs "
            "without the feature cache); inference of bitfit, ssf and LoRA runs merged. Peak memory: "
            f"{meta.get('memory', 'peak')}. Panels are on their own scales.")


def similarity_groups(table: Table, predictions: dict) -> list[tuple[str, dict, str]]:
    """(title, method -> task -> measure -> per-layer values, caption note) for each backbone, setting
    and dataset with runs on at least two tasks that stored per-layer similarities."""
    groups: dict[tuple, dict] = {}
    keys: dict[tuple, dict[str, set]] = {}
    for (row, col), c in table.cells.items():
        corr = c.experiment.metrics.get("correlate", {}) if c.value is not None else {}
        measures = {k: v for k, v in corr.items() if k.endswith("_per_layer") and isinstance(v, list)}
        if not measures:
            continue
        g = (row.backbone, row.setting, col.dataset)
        groups.setdefault(g, {}).setdefault(row.system, {})[col.task] = measures
        pr = predictions.get(c.experiment.rev, (None,))[0]
        if pr is not None:
            keys.setdefault(g, {}).setdefault(col.task, set()).update(pr.keys)
    out = []
    for (bb, setting, dataset), per_method in groups.items():
        tasks = {t for per in per_method.values() for t in per}
        if len(tasks) < 2:
            continue
        sets = list(keys.get((bb, setting, dataset), {}).values())
        shared = len(set.intersection(*sets)) if sets else 0
        note = (f"{dataset} test items: " + ", ".join(f"{t} {len(s)}" for t, s in keys[(bb, setting, dataset)].items())
                + f"; {shared} shared by all tasks") if sets else ""
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in setting)
        out.append((f"{bb}{' [' + label + ']' if label else ''} on {dataset}", per_method, note))
    return out


def make_report(repo: str | Path = ".", out: str | Path | None = None, names: list[str] | None = None,
                where: list[str] | None = None, revs: list[str] | None = None, all_commits: bool = False,
                n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, complexity: str | Path | None = None,
                command: str = "musicpetl report") -> dict[str, Path]:
    """Collect the experiments, compute, render and write; returns the written paths. InputError on
    bad input (no experiments, mixed test sets in a column, an unknown name)."""
    repo = Path(repo)
    out = Path(out) if out is not None else repo / "reports"
    exps = collect(repo, names=names, where=where, revs=revs, all_commits=all_commits)
    ran = [e for e in exps if e.state != "success" or "test" in e.metrics
           or (e.outs.get("data/predictions.npz") or {}).get("hash")]
    if not ran:
        sel = " matching the selection" if (names or where) else ""
        raise InputError(f"no experiments with results{sel} in this repository ({len(exps)} revisions without "
                         f"test predictions): run `dvc exp run` or `dvc repro` first")
    predictions = {e.rev: load_predictions(e, repo) for e in ran}  # by commit: names repeat across baselines
    cpath = Path(complexity) if complexity is not None else out / "complexity.json"
    cdata = json.loads(cpath.read_text()) if cpath.is_file() else None
    report = build_report(ran, predictions, n_boot=n_boot, alpha=alpha, seed=seed, complexity=cdata, command=command)
    return write_report(report, out)


def build_report(exps: list[Experiment], predictions: dict, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, complexity: dict | None = None, command: str = "musicpetl report") -> Report:
    """Table 2 and the figures from experiments and their predictions (rev -> (Predictions | None, reason))."""
    from musicpetl.analysis.figures import complexity_figure, layer_figure, similarity_figure

    table = build_table(exps, predictions, n_boot=n_boot, alpha=alpha, seed=seed)
    report = Report(table, command=command, complexity=complexity)
    _number_missing(report)
    if complexity:
        report.figures.append(Figure("complexity", "Figure 2: time and memory relative to full fine-tuning",
                                     complexity_caption(complexity), complexity_figure(complexity)))
    pct = round(100 * (1 - alpha))
    for col in table.columns:
        drawn = layer_figure(table, col)
        if drawn is not None:
            png, notes = drawn
            cap = (f"Figure 3. Layer ablation on {col.label}: the metric with its {pct} % interval against the "
                   "number of backbone layers used, per system and backbone; x at the bottom: no result.")
            if notes:
                cap += " " + " ".join(f"[{i}] {n}." for i, n in enumerate(notes, 1))
            report.figures.append(Figure(f"layers_{col.dataset}_{col.task}", f"Figure 3: layers, {col.label}", cap, png))
    for i, (title, per_method, note) in enumerate(similarity_groups(table, predictions)):
        cap = ("Section 5.3. Similarity of each trained model's test features to the pre-trained backbone's, per "
               "layer (linear CKA; 1 = unchanged), for runs trained on different tasks over the same test audio; "
               f"one panel per method, one line per task. {note}.")
        report.figures.append(Figure(f"similarity_{i + 1}", f"Feature similarity: {title}", cap,
                                     similarity_figure(per_method, f"trained vs pre-trained features: {title}")))
    return report


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """reports/report.md, report.html, report.json and figures/*.png (atomically, each)."""
    from musicpetl.io import atomic_path, write_json

    out = Path(out)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for f in report.figures:
        paths[f.name] = out / "figures" / f"{f.name}.png"
        with atomic_path(paths[f.name]) as tmp:
            Path(tmp).write_bytes(f.png)
    with atomic_path(paths["markdown"]) as tmp:
        Path(tmp).write_text(render_markdown(report), encoding="utf-8")
    with atomic_path(paths["html"]) as tmp:
        Path(tmp).write_text(render_html(report), encoding="utf-8")
    write_json(paths["json"], report_json(report))
    return paths


def report_json(report: Report) -> dict:
    t = report.table
    cells = []
    for (r, col), c in sorted(t.cells.items(), key=lambda kv: (t.rows.index(kv[0][0]), t.columns.index(kv[0][1]))):
        cells.append({"backbone": r.backbone, "baseline": r.baseline, "label": r.label,
                      "setting": dict(r.setting), "system": r.system, "method": r.method,
                      "column": col.id, "metric": col.metric, "experiment": c.experiment.name,
                      "rev": c.experiment.rev, "value": c.value, "low": c.low, "high": c.high, "missing": c.missing,
                      "tests": c.tests, "p_cell": c.p_cell, "p_holm": c.p_holm, "best": c.best, "better": c.better,
                      "superseded": c.superseded})
    return {"alpha": t.alpha, "n_boot": t.n_boot, "n_tested": t.n_tested, "correction": "holm",
            "columns": [c.id for c in t.columns], "cells": cells, "missing": report.notes}
