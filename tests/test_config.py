from pathlib import Path

import pytest
import yaml

from musicpetl.checks import check_params
from musicpetl.config import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def raw():
    return yaml.safe_load((ROOT / "tests/fixtures/params.yaml").read_text())


def test_repo_params_load():
    p = load_params(ROOT / "tests/fixtures/params.yaml")
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
    p = parse_params(r)  # names are the registries' business: checked by musicpetl.checks
    with pytest.raises(ConfigError, match=rf"unknown {path[0]}\.{path[1]} '{value}'; valid: .*{valid}"):
        check_params(p)


def test_unknown_key_lists_valid_keys():
    r = raw()
    r["train"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match="unknown param train.learning_rate; valid: batch_size, lr"):
        parse_params(r)


def test_task_not_offered_by_dataset():
    r = raw()
    r["data"]["dataset"], r["data"]["task"] = "mtat", "key"
    with pytest.raises(ConfigError, match="dataset 'mtat' has no task 'key'"):
        check_params(parse_params(r))


def test_wrong_type():
    r = raw()
    r["train"]["max_steps"] = "many"
    with pytest.raises(ConfigError, match="train.max_steps must be an integer, got 'many'"):
        parse_params(r)


def test_method_options_block():
    r = raw()
    r["petl"]["method"] = "finetune"
    r["petl"]["finetune"] = {"bogus": 1}
    with pytest.raises(ConfigError, match="unknown param petl.finetune.bogus"):
        check_params(parse_params(r))
    r["petl"] = {"method": "probing", "shoe": {}}
    with pytest.raises(ConfigError, match="unknown params block petl.shoe"):
        check_params(parse_params(r))


def test_yaml_octal_seed_is_refused(tmp_path):
    # the reference configs' `seed: 0501` is read by YAML 1.1 as octal 321
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "tests/fixtures/params.yaml").read_text().replace("seed: 0\n", "seed: 0501\n", 1))
    with pytest.raises(ConfigError, match="seed: 0501 has a leading zero, which YAML reads as octal 321"):
        load_params(path)


# issue 9, "params checked late or not at all": each case is refused by name before any work
@pytest.mark.parametrize("path,value,message", [
    (("train", "max_steps"), 0, r"train.max_steps = 0 is out of range; allowed: \[1, inf\)"),
    (("train", "eval_every"), 0, r"train.eval_every = 0 is out of range; allowed: \[1, inf\)"),
    (("seed",), 1.5, r"seed must be an integer, got 1.5"),
    (("train", "lr"), -0.001, r"train.lr = -0.001 is out of range; allowed: \(0.0, inf\)"),
    (("train", "crop_seconds"), 12.0, r"train.crop_seconds = 12 is longer than the synth clips \(data.synth.duration = 6\)"),
    (("train", "crop_seconds"), 60.0, r"train.crop_seconds = 60 is longer than the synth clips"),
    (("eval", "alpha"), 1.5, r"eval.alpha = 1.5 is out of range; allowed: \(0.0, 1.0\)"),
    (("data", "split", "valid_share"), 0.9, r"leaves no training items"),
    (("data", "augment", "pitch_shifts"), [1, 2.5], r"data.augment.pitch_shifts\[1\] must be an integer, got 2.5"),
    (("train", "precision"), "fp16", r"unknown train.precision 'fp16'; valid: fp32, bf16"),
    (("train", "lr"), float("nan"), r"train.lr must be a finite number"),
])
def test_bad_values_are_refused_with_key_value_and_range(path, value, message):
    r = raw()
    node = r
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        check_params(parse_params(r))


@pytest.mark.parametrize("where,key", [((), "trian"), (("data",), "sample_rte"), (("petl", "lora"), "rnak")])
def test_misspelt_key_anywhere_is_refused(where, key):
    r = raw()
    node = r
    for k in where:
        node = node[k]
    node[key] = 1
    with pytest.raises(ConfigError, match=rf"unknown param .*{key}; valid:"):
        check_params(parse_params(r))


def test_sample_rate_must_match_the_backbone():
    r = raw()
    r["data"]["sample_rate"] = 16000
    with pytest.raises(ConfigError, match=r"data.sample_rate = 16000 but mert-tiny reads 24000 Hz audio; allowed: 24000"):
        check_params(parse_params(r))


def test_layers_beyond_the_backbone_depth():
    r = raw()
    r["backbone"]["num_layers"] = 13
    if "features" in r:
        r["features"]["layers"] = 0  # every layer of the backbone: the cache follows num_layers
    with pytest.raises(ConfigError, match=r"backbone.num_layers = 13 but mert-tiny has 6 layers; allowed: 1 to 6"):
        check_params(parse_params(r))


def test_method_option_types():
    r = raw()
    r["petl"]["lora"]["rank"] = 0
    with pytest.raises(ConfigError, match=r"petl.lora.rank = 0 is out of range"):
        check_params(parse_params(r))
    r["petl"]["lora"]["rank"] = 2.5
    with pytest.raises(ConfigError, match=r"petl.lora.rank must be an integer, got 2.5"):
        check_params(parse_params(r))


def test_every_method_has_a_params_block():
    # the train stage depends on petl.${petl.method}: DVC needs the block to exist for every method
    from musicpetl.petl import METHODS

    assert set(raw()["petl"]) - {"method"} == set(METHODS)


def test_beat_is_a_task_of_the_pipeline_where_the_dataset_has_beats():
    r = raw()
    r["data"]["task"] = "beat"
    check_params(parse_params(r))  # synth has beats
    r["data"]["dataset"] = "mtat"
    with pytest.raises(ConfigError, match=r"dataset 'mtat' has no task 'beat'"):
        check_params(parse_params(r))


def test_feature_cache_must_hold_the_used_layers():
    r = raw()
    r["features"]["layers"] = 3  # the fixture uses 6 layers
    with pytest.raises(ConfigError, match=r"features.layers = 3 but the cache must hold backbone.num_layers = 6"):
        check_params(parse_params(r))


def test_cached_front_end_is_refused_when_the_front_end_trains():
    r = raw()
    r["petl"]["method"], r["train"]["cache_frontend"] = "finetune", True
    with pytest.raises(ConfigError, match=r"train.cache_frontend = true but petl.method = 'finetune' trains the front end"):
        check_params(parse_params(r))
