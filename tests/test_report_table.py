"""Table 2 from a fixture set of experiment outputs (predictions written by evaluate's own
save_predictions, read back by compare's read_predictions): bold and significance marks, a higher
mean that is not significant, missing cells, refusals, the layer-ablation and similarity figures,
and an HTML page with no external reference."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import numpy as np
import pytest

from musicpetl.analysis.compare import read_predictions
from musicpetl.analysis.experiments import Experiment
from musicpetl.analysis.report import MARK, build_report, render_html, render_markdown, write_report
from musicpetl.analysis.table import build_table, holm
from musicpetl.errors import InputError
from musicpetl.evaluate import save_predictions
from musicpetl.tasks import make_task

N = 200
CLASSES = [f"style{i}" for i in range(10)]
T0 = datetime(2024, 1, 1)


class Fixture:
    """Experiments and their stored predictions, built one run at a time."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.exps: list[Experiment] = []
        self.preds: dict = {}

    def run(self, name, backbone, method, correct=None, *, task="genre", dataset="synth", keys=None, labels=None,
            layers=6, state="success", reason=None, trainable=0, size=20_000, extra=None, correlate=None):
        params = {"seed": 0, "data.dataset": dataset, "data.task": task, "data.root": f"data/raw-{name}",
                  "backbone.name": backbone, "backbone.num_layers": layers, "petl.method": method,
                  "petl.lora.rank": 2, "train.lr": 0.003, "train.device": "auto", **(extra or {})}
        metrics = {"train": {"trainable_backbone_params": trainable}} if state == "success" else {}
        if correlate:
            metrics["correlate"] = correlate
        exp = Experiment(name=name, rev=f"{len(self.exps):040x}", kind="experiment", params=params, metrics=metrics,
                         outs={"models/run.safetensors": {"hash": "x", "size": size}}, state=state, reason=reason,
                         created=T0 + timedelta(minutes=len(self.exps)))
        self.exps.append(exp)
        if state != "success":
            self.preds[exp.rev] = (None, reason)
            return exp
        keys = keys if keys is not None else [f"clip{i:03d}" for i in range(N)]
        labels = labels if labels is not None else [i % 10 for i in range(len(keys))]
        t = make_task(task, CLASSES if task in ("genre", "tagging") else None)
        probs = np.full((len(keys), t.n_outputs), 0.01, dtype=np.float32)
        for i, lab in enumerate(labels):
            probs[i, lab if i in correct else (lab + 1) % t.n_outputs] = 0.9
        path = self.dir / f"{name}.npz"
        save_predictions(path, keys, labels, probs, t)
        self.preds[exp.rev] = (read_predictions(str(path), name=name), None)
        return exp


def first(n):
    return set(range(n))


@pytest.fixture
def grid(tmp_path):
    f = Fixture(tmp_path)
    # mert-tiny: LoRA is right on a superset of what FT and probing get right -> significant;
    # the adapter's mean is above both, but only 2 items above probing's -> not significant
    f.run("ft-m", "mert-tiny", "finetune", first(100), trainable=335_440, size=1_400_000)
    f.run("pr-m", "mert-tiny", "probing", first(110))
    f.run("lora-m", "mert-tiny", "lora", first(150), trainable=4_000)
    f.run("ad-m", "mert-tiny", "adapter", first(112), trainable=9_000)
    f.run("bf-m", "mert-tiny", "bitfit", state="failed", reason="[train] error: CUDA out of memory")
    # musicfm-tiny: the adapter is best (bold) but 2 items above probing: not marked; ssf ties it
    f.run("ft-f", "musicfm-tiny", "finetune", first(120))
    f.run("pr-f", "musicfm-tiny", "probing", first(124))
    f.run("ad-f", "musicfm-tiny", "adapter", first(126))
    f.run("ssf-f", "musicfm-tiny", "ssf", first(126))
    # a second column with one run: the other cells stay missing
    f.run("pr-m-key", "mert-tiny", "probing", first(30), task="key", keys=[f"k{i}" for i in range(60)],
          labels=[i % 24 for i in range(60)])
    return f


def cell(table, backbone, system, column_id):
    hits = [c for (r, col), c in table.cells.items() if r.backbone == backbone and r.system == system
            and col.id == column_id]
    assert len(hits) == 1, (backbone, system, column_id, hits)
    return hits[0]


def test_bold_and_marks(grid):
    t = build_table(grid.exps, grid.preds, n_boot=1000)
    lora, adapter = cell(t, "mert-tiny", "lora", "synth/genre"), cell(t, "mert-tiny", "adapter", "synth/genre")
    assert lora.value == pytest.approx(0.75) and lora.best and lora.better
    assert lora.tests["finetune"]["delta"] == pytest.approx(0.25) and lora.tests["probing"]["delta"] == pytest.approx(0.20)
    # higher mean than both FT and probing, but not significantly above probing -> no mark
    assert adapter.value == pytest.approx(0.56) and adapter.tests["probing"]["delta"] > 0
    assert adapter.tests["finetune"]["p_value"] < 0.05 and adapter.tests["probing"]["p_value"] > 0.05
    assert not adapter.better and not adapter.best
    assert adapter.p_cell == adapter.tests["probing"]["p_value"]  # intersection-union: the larger p
    # musicfm-tiny: the best (bold, and a tie is bold twice) but not significant -> no mark
    ad_f, ssf_f = cell(t, "musicfm-tiny", "adapter", "synth/genre"), cell(t, "musicfm-tiny", "ssf", "synth/genre")
    assert ad_f.best and ssf_f.best and not ad_f.better and not ssf_f.better
    assert ad_f.tests["probing"]["p_value"] > 0.05
    # FT and probing are never marked (they are what is compared against); bold is per backbone
    for system in ("finetune", "probing"):
        for bb in ("mert-tiny", "musicfm-tiny"):
            c = cell(t, bb, system, "synth/genre")
            assert not c.better and c.p_cell is None and not c.best
    # Holm over the cells tested: mert lora + adapter, musicfm adapter + ssf
    assert t.n_tested == 4
    assert lora.p_holm == pytest.approx(min(1.0, 4 * lora.p_cell))  # the smallest p is multiplied by 4
    md = render_markdown(build_report(grid.exps, grid.preds, n_boot=1000))
    lora_line = next(ln for ln in md.splitlines() if ln.startswith("| mert-tiny ") and "| lora " in ln)
    ad_line = next(ln for ln in md.splitlines() if ln.startswith("| mert-tiny ") and "| adapter " in ln)
    assert "**0.750**" in lora_line and MARK in lora_line
    assert "0.560 (" in ad_line and "**" not in ad_line and MARK not in ad_line
    assert "Holm" in md and "over all 4 cells tested" in md
    assert md.count(MARK) == 1 + md.count(f"{MARK} (underlined")  # the caption names the mark once


def test_holm_adjusted_p_values():
    # textbook example: sorted p 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, made monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_missing_cells_are_missing_never_zero(grid, tmp_path):
    report = build_report(grid.exps, grid.preds, n_boot=200)
    t = report.table
    failed = cell(t, "mert-tiny", "bitfit", "synth/genre")
    assert failed.value is None and "CUDA out of memory" in failed.missing
    assert t.cell(failed.row, next(c for c in t.columns if c.id == "synth/key")) is None  # never run
    md = render_markdown(report)
    bitfit = next(ln for ln in md.splitlines() if "| bitfit " in ln)
    assert "— [1]" in bitfit and "0.000" not in bitfit
    assert "[1] mert-tiny bitfit, synth genre (Acc.) — bf-m: [train] error: CUDA out of memory" in md
    lora = next(ln for ln in md.splitlines() if "| lora " in ln)
    assert lora.count("—") == 1  # the key cell: not run, no note
    html = render_html(report)
    assert 'title="[train] error: CUDA out of memory">— <sup>[1]</sup>' in html
    paths = write_report(report, tmp_path / "reports")
    cells = json.loads(paths["json"].read_text())["cells"]
    bf = next(c for c in cells if c["system"] == "bitfit")
    assert bf["value"] is None and bf["low"] is None and "CUDA" in bf["missing"]
    # run size and trainable params: from the runs, missing when unknown
    probing = next(ln for ln in md.splitlines() if ln.startswith("| mert-tiny ") and "| probing " in ln)
    assert probing.rstrip(" |").endswith("20.0 kB")
    assert "335.4k" in next(ln for ln in md.splitlines() if ln.startswith("| mert-tiny ") and "| finetune " in ln)
    assert [c.strip() for c in bitfit.split("|")][-3:-1] == ["—", "—"]  # no run: no params, no size


def test_refuses_a_column_with_different_test_sets(tmp_path):
    f = Fixture(tmp_path)
    f.run("ft", "mert-tiny", "finetune", first(100))
    f.run("pr", "mert-tiny", "probing", first(100))
    f.run("lora-other-split", "mert-tiny", "lora", first(50), keys=[f"other{i:03d}" for i in range(N)])
    with pytest.raises(InputError) as err:
        build_table(f.exps, f.preds, n_boot=50)
    msg = str(err.value)
    assert "synth/genre" in msg and "lora-other-split" in msg and "ft" in msg and "different test sets" in msg


def test_refuses_same_items_with_other_labels(tmp_path):
    f = Fixture(tmp_path)
    f.run("ft", "mert-tiny", "finetune", first(100))
    f.run("relabelled", "mert-tiny", "probing", first(100), labels=[(i + 3) % 10 for i in range(N)])
    with pytest.raises(InputError, match="relabelled.*different labels"):
        build_table(f.exps, f.preds, n_boot=50)


def test_refuses_predictions_of_another_task(tmp_path):
    f = Fixture(tmp_path)
    f.run("ft", "mert-tiny", "finetune", first(100))
    exp = f.run("says-genre", "mert-tiny", "probing", first(10), task="key", keys=[f"k{i}" for i in range(40)],
                labels=[i % 24 for i in range(40)])
    exp.params["data.task"] = "genre"  # params say genre, the stored predictions are key predictions
    with pytest.raises(InputError, match="says-genre.*not genre predictions"):
        build_table(f.exps, f.preds, n_boot=50)


def test_newest_run_of_a_cell_wins_and_a_failed_rerun_hides_nothing(tmp_path):
    f = Fixture(tmp_path)
    f.run("old", "mert-tiny", "probing", first(80))
    f.run("new", "mert-tiny", "probing", first(120))
    f.run("broken-rerun", "mert-tiny", "probing", state="failed", reason="[train] error: disk full")
    t = build_table(f.exps, f.preds, n_boot=50)
    (c,) = t.cells.values()
    assert c.experiment.name == "new" and c.value == pytest.approx(0.6)
    assert c.superseded[0] == "old" and "broken-rerun" in c.superseded[1]


def test_rows_split_by_params_that_vary_and_ignore_the_rest(tmp_path):
    f = Fixture(tmp_path)
    f.run("lora2", "mert-tiny", "lora", first(100), extra={"petl.lora.rank": 2, "petl.adapter.bottleneck": 8})
    f.run("lora8", "mert-tiny", "lora", first(110), extra={"petl.lora.rank": 8})
    f.run("pr", "mert-tiny", "probing", first(90), extra={"petl.lora.rank": 8, "train.device": "cuda"})
    t = build_table(f.exps, f.preds, n_boot=50)
    assert sorted(r.system for r in t.rows) == ["lora (rank=2)", "lora (rank=8)", "probing"]
    assert all(r.setting == () for r in t.rows)  # data.root, train.device and other methods' settings ignored


def test_layer_ablation_figure_with_a_run_that_could_not_run(tmp_path):
    f = Fixture(tmp_path)
    for layers in (3, 6, 9, 12):
        f.run(f"pr{layers}", "mert-tiny", "probing", first(90 + layers), layers=layers)
        f.run(f"lora{layers}", "mert-tiny", "lora", first(100 + layers), layers=layers)
        if layers < 12:
            f.run(f"ft{layers}", "mert-tiny", "finetune", first(80 + layers), layers=layers)
        else:
            f.run("ft12", "mert-tiny", "finetune", layers=12, state="failed",
                  reason="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    report = build_report(f.exps, f.preds, n_boot=100)
    t = report.table
    assert {r.setting_label for r in t.rows} == {"num_layers=3", "num_layers=6", "num_layers=9", "num_layers=12"}
    # paired tests stay within a layer count: lora at 12 layers has probing but no FT -> untested
    lora12 = next(c for (r, _), c in t.cells.items() if r.method == "lora" and r.setting_label == "num_layers=12")
    assert lora12.p_cell is None and set(lora12.tests) == {"probing"}
    (fig,) = [fg for fg in report.figures if fg.name.startswith("layers_")]
    assert fig.png[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.png) > 5000
    assert "finetune, 12 layers: torch.OutOfMemoryError: CUDA out of memory" in fig.caption
    assert "num_layers=12" in render_markdown(report)


def test_similarity_figure_for_runs_on_different_tasks(tmp_path):
    f = Fixture(tmp_path)
    keys = [f"clip{i:03d}" for i in range(N)]
    for task, labels in (("genre", [i % 10 for i in range(N)]), ("key", [i % 24 for i in range(N)])):
        for method, cka in (("probing", [1.0] * 6), ("lora", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])):
            f.run(f"{method}-{task}", "mert-tiny", method, first(100), task=task, keys=keys, labels=labels,
                  correlate={"cka_per_layer": cka, "cka_last": cka[-1]})
    report = build_report(f.exps, f.preds, n_boot=50)
    (fig,) = [fg for fg in report.figures if fg.name.startswith("similarity")]
    assert "mert-tiny on synth" in fig.title and "genre 200, key 200; 200 shared by all tasks" in fig.caption
    assert fig.png[:4] == b"\x89PNG"
    # a single task: nothing to compare, no figure
    one = Fixture(tmp_path / "one")
    (tmp_path / "one").mkdir()
    one.run("lora-genre", "mert-tiny", "lora", first(100), correlate={"cka_per_layer": [0.5] * 6})
    assert not [fg for fg in build_report(one.exps, one.preds, n_boot=50).figures if fg.name.startswith("similarity")]


def test_html_is_self_contained(grid, tmp_path):
    complexity = {"mert-tiny": {"meta": {"device": "CPU", "num_layers": 6, "batch": 2, "seconds": 1.0, "steps": 2,
                                         "forwards": 2, "rounds": 1},
                                "methods": {m: {"trainable": n, "step_s": s, "infer_s": 0.1, "peak_mib": p,
                                                "step_ratio": s / 0.4, "infer_ratio": 1.0, "peak_ratio": p / 300}
                                            for m, n, s, p in (("finetune", 335_440, 0.4, 300), ("lora", 4000, 0.2, 120))}}}
    complexity["mert-tiny"]["methods"]["prefix"] = {"error": "out of memory: CUDA out of memory"}
    report = build_report(grid.exps, grid.preds, n_boot=100, complexity=complexity)
    assert [fg.name for fg in report.figures] == ["complexity"]
    html = write_report(report, tmp_path / "reports")["html"].read_text()
    assert "<img" in html and "data:image/png;base64," in html
    for attr in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, flags=re.I):
        assert attr.startswith(("data:", "#")), attr
    assert not re.search(r"https?://|@import|url\(|@font-face|<link|<script", html, flags=re.I)
    assert (tmp_path / "reports/figures/complexity.png").stat().st_size > 5000
    md = (tmp_path / "reports/report.md").read_text()
    assert "![Figure 2" in md and "| prefix" in md and "out of memory" in md


def test_too_few_items_give_no_interval_and_no_test(tmp_path):
    f = Fixture(tmp_path)
    keys, labels = [f"c{i}" for i in range(6)], [i % 10 for i in range(6)]
    f.run("ft", "mert-tiny", "finetune", first(1), keys=keys, labels=labels)
    f.run("pr", "mert-tiny", "probing", first(2), keys=keys, labels=labels)
    f.run("lora", "mert-tiny", "lora", first(6), keys=keys, labels=labels)
    report = build_report(f.exps, f.preds, n_boot=100)
    lora = cell(report.table, "mert-tiny", "lora", "synth/genre")
    assert lora.value == 1.0 and lora.low is None and lora.p_cell is None and not lora.better and lora.best
    md = render_markdown(report)
    assert "**1.000** (no interval, n=6)" in md and "nan" not in md and "no interval and no test on fewer than" in md
