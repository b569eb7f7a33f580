"""The console command: Table 3 as JSON (the paper's settings), errors as one line, exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicpetl.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_params_paper_json_is_table3(capsys):
    assert main(["params", "--backbone", "mert-v1-95m", "--paper", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backbone"] == "mert-v1-95m" and out["num_layers"] == 6
    assert out["methods"] == {"finetune": 51_843_712, "probing": 0, "adapter": 322_752, "prompt": 49_152,
                              "prefix": 7_385_088, "bitfit": 50_688, "ssf": 82_944, "lora": 165_888}


def test_params_follows_params_yaml(tmp_path, capsys):
    text = (ROOT / "tests/fixtures/params.yaml").read_text().replace("lora: {rank: 2,", "lora: {rank: 4,", 1)
    assert "lora: {rank: 4," in text
    (tmp_path / "params.yaml").write_text(text)
    assert main(["params", "--backbone", "mert-tiny", "--params", str(tmp_path / "params.yaml"), "--json"]) == 0
    lora4 = json.loads(capsys.readouterr().out)["methods"]["lora"]
    assert main(["params", "--backbone", "mert-tiny", "--params", str(ROOT / "tests/fixtures/params.yaml"), "--json"]) == 0
    assert lora4 == 2 * json.loads(capsys.readouterr().out)["methods"]["lora"]


def test_unknown_backbone_is_one_line(capsys):
    assert main(["params", "--backbone", "mert-v2", "--paper"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'mert-v2'" in err and "mert-v1-95m" in err and "Traceback" not in err
