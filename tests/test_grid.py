"""The grid over several machines with DVC's own mechanism, as the README shows it: a bare git repo
and a local DVC remote stand in for the shared servers; the baseline commit carries the prepared
data (pushed once), clone A runs one experiment and pushes it, clone B another, and a third clone
pulls both and reports them side by side (paired on the same test items)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipeline_repo import GIT, make_repo, sh

UPSTREAM = ("download", "split", "augment", "prepare", "cache_features")


def grid_params(path: Path) -> None:
    """Tinier than the pipeline test's: the style task (no augmentation), few clips, 3 steps."""
    p = yaml.safe_load(path.read_text())
    p["data"]["task"] = "genre"
    p["data"]["synth"] = {"n_clips": 28, "duration": 2.0}
    p["data"]["split"] = {"valid_share": 0.15, "test_share": 0.4}  # >= 10 test items: intervals and paired tests
    p["train"].update(max_steps=3, eval_every=3, batch_size=4, crop_seconds=2.0)
    p["backbone"]["segment_seconds"] = 2.0
    p["eval"]["bootstrap"] = 20
    p["analysis"]["max_items"] = 4
    path.write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.mark.slow
def test_grid_over_two_machines_and_a_report_from_a_third(tmp_path):
    origin, storage = tmp_path / "origin.git", tmp_path / "dvc-storage"
    sh("git", "init", "-q", "--bare", "--initial-branch=main", str(origin), cwd=tmp_path)
    # the baseline: data prepared once (download..cache_features), its outputs pushed to the DVC remote
    seed = make_repo(tmp_path / "seed")
    grid_params(seed / "params.yaml")
    sh("dvc", "remote", "add", "-d", "storage", str(storage), cwd=seed)
    prep = sh("dvc", "repro", "cache_features", cwd=seed)
    assert all(f"[{s}] done" in prep.stdout for s in UPSTREAM), prep.stdout[-3000:]
    sh("dvc", "push", cwd=seed)
    sh(*GIT, "add", "-A", cwd=seed)
    sh(*GIT, "commit", "-qm", "grid baseline: tiny params, prepared data, shared DVC remote", cwd=seed)
    sh("git", "push", "-q", str(origin), "HEAD:refs/heads/main", cwd=seed)

    # machines A and B: each its share of the grid on the same prepared data (no raw audio needed)
    for machine, method in (("a", "probing"), ("b", "bitfit")):
        clone = tmp_path / machine
        sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
        sh("dvc", "pull", "--with-deps", "cache_features", cwd=clone)  # the prepared data, from the DVC remote
        run = sh("dvc", "exp", "run", "-n", f"grid-{method}", "-S", f"petl.method={method}", cwd=clone)
        for s in UPSTREAM:
            assert f"[{s}] done" not in run.stdout, f"{machine} recomputed {s}:\n{run.stdout[-3000:]}"
        assert "[train] done" in run.stdout and "[evaluate] done" in run.stdout, run.stdout[-3000:]
        sh("dvc", "exp", "push", "origin", cwd=clone)  # its experiments: git refs + outputs to the DVC remote

    # a third place: pull both experiments (git refs + DVC cache) and report them
    c = tmp_path / "c"
    sh("git", "clone", "-q", str(origin), str(c), cwd=tmp_path)
    listed = sh("dvc", "exp", "list", "--name-only", "origin", cwd=c).stdout.split()
    assert sorted(listed) == ["grid-bitfit", "grid-probing"]
    sh("dvc", "exp", "pull", "origin", cwd=c)  # every experiment of HEAD, with its outputs
    rep = sh("musicpetl", "report", "--bootstrap", "100", cwd=c)
    assert "report written" in rep.stdout
    cells = json.loads((c / "reports/report.json").read_text())["cells"]
    got = {(x["experiment"], x["system"], x["column"]) for x in cells}
    assert got == {("grid-probing", "probing", "synth/genre"), ("grid-bitfit", "bitfit", "synth/genre")}
    assert all(x["value"] is not None and x["low"] <= x["value"] <= x["high"] for x in cells)
    bitfit = next(x for x in cells if x["system"] == "bitfit")
    assert set(bitfit["tests"]) == {"probing"}  # paired on the same test items; no FT run, so no mark
    md = (c / "reports/report.md").read_text()
    assert "| bitfit " in md and "| probing " in md
    html = (c / "reports/report.html").read_text()
    assert "grid-bitfit" in html and "http://" not in html and "https://" not in html
