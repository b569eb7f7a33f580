from pathlib import Path

import pytest
import yaml

from musicpetl.config import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.data.dataset == "synth" and p.backbone.name == "mert-tiny"
    assert p.train.min_lr == pytest.approx(1e-7)


@pytest.mark.parametrize("path,value,valid", [
    (("petl", "method"), "loraa", "finetune"),
    (("data", "task"), "beats", "tempo"),
    (("data", "dataset"), "gtzan2", "gtzan"),
    (("backbone", "name"), "mert-v2", "musicfm-msd"),
])
def test_unknown_choice_lists_valid_values(path, value, valid):
    r = raw()
    r[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=rf"unknown {path[0]}\.{path[1]} '{value}'; valid: .*{valid}"):
        parse_params(r)


def test_unknown_key_lists_valid_keys():
    r = raw()
    r["train"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match="unknown param train.learning_rate; valid: batch_size, lr"):
        parse_params(r)


def test_task_not_offered_by_dataset():
    r = raw()
    r["data"]["dataset"], r["data"]["task"] = "mtat", "key"
    with pytest.raises(ConfigError, match="dataset 'mtat' has no task 'key'"):
        parse_params(r)


def test_wrong_type():
    r = raw()
    r["train"]["max_steps"] = "many"
    with pytest.raises(ConfigError, match="train.max_steps must be a number"):
        parse_params(r)


def test_method_options_block():
    r = raw()
    r["petl"]["method"] = "finetune"
    r["petl"]["finetune"] = {"bogus": 1}
    with pytest.raises(ConfigError, match="unknown param petl.finetune.bogus"):
        parse_params(r)
    r["petl"] = {"method": "probing", "shoe": {}}
    with pytest.raises(ConfigError, match="unknown params block petl.shoe"):
        parse_params(r)


def test_yaml_octal_seed_is_refused(tmp_path):
    # the reference configs' `seed: 0501` is read by YAML 1.1 as octal 321
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("seed: 0\n", "seed: 0501\n", 1))
    with pytest.raises(ConfigError, match="seed: 0501 has a leading zero, which YAML reads as octal 321"):
        load_params(path)
