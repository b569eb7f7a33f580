"""Official checkpoint files load exactly (every key used or dropped by name) and the loaded models
match their references: transformers' HubertModel saved with save_pretrained (MERT) and a
MusicFM25Hz-shaped model (public code + transformers' Wav2Vec2ConformerEncoder) saved the way the
release is (`state_dict` under `model.`, torch.Size and set in the pickle, float num_batches_tracked).
No weights can be downloaded here: full-size files are built with random weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from musicpetl.backbones import build_backbone, load_backbone
from musicpetl.backbones.checkpoints import (
    MUSICFM_PICKLE_GLOBALS,
    CheckpointError,
    check_mert_config,
    convert_mert,
    convert_musicfm,
    fetch_official,
    load_pretrained,
    mert_official_to_ours,
    mert_ours_to_official,
    musicfm_ours_to_official,
)
from musicpetl.backbones.mert import MERT_TINY, MERT_V1_95M
from musicpetl.backbones.musicfm import MUSICFM_TINY

from test_backbones import (  # noqa: E402  (shared oracles; tests/ is on sys.path under pytest)
    TOL,
    RefMusicFM25Hz,
    audio,
    hidden_by_hooks,
    hubert_config,
    max_diffs,
    perturb_,
    transformers,
)

# Every key of the release that inference never reads (after the `model.` prefix). The positional
# conv is stored with the weight-norm names of the transformers version that saved it: both spellings
# are dropped by the same pattern.
MUSICFM_UNUSED_KEYS = {
    "preprocessor_melspec_2048.mel_stft.spectrogram.window",
    "preprocessor_melspec_2048.mel_stft.mel_scale.fb",
    "quantizer_melspec_2048_0.random_projection",
    "quantizer_melspec_2048_0.codebook",
    "linear.weight",
    "linear.bias",
    "cls_token",
    "conformer.pos_conv_embed.conv.bias",
    "conformer.pos_conv_embed.conv.weight_g",
    "conformer.pos_conv_embed.conv.weight_v",
}


# -- writing files the way the releases are -----------------------------------------------------

def legacy_weight_norm(sd: dict) -> dict:
    """parametrizations.weight.original0/1 -> weight_g/weight_v (torch.nn.utils.weight_norm names)."""
    return {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                "weight_v"): v
            for k, v in sd.items()}


def write_musicfm_release(folder: Path, ref: RefMusicFM25Hz, mean: float, std: float,
                          pt_name: str = "musicfm_random.pt", stats_name: str = "musicfm_random_stats.json",
                          edit=None) -> Path:
    """A file shaped like pretrained_msd.pt: {"state_dict": {"model." + key: tensor}, ...} with the
    full key set, float num_batches_tracked, torch.Size and set elsewhere in the pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in legacy_weight_norm(ref.state_dict()).items():
        sd["model." + k] = v.float() if k.endswith("num_batches_tracked") else v
    if edit:
        edit(sd)
    ckpt = {"state_dict": sd, "epoch": 7, "global_step": 123456,
            "hyper_parameters": {"input_shape": torch.Size([4, 720000]), "features": {"melspec_2048"}}}
    torch.save(ckpt, folder / pt_name)  # default protocol 2, as the weights_only unpickler needs
    stats = {"melspec_2048_mean": mean, "melspec_2048_std": std, "melspec_2048_cnt": 1000}
    (folder / stats_name).write_text(json.dumps(stats))
    return folder / pt_name


def write_hf_folder(folder: Path, hf, legacy: bool = False, prefix: str = "") -> Path:
    """save_pretrained, or (legacy) config.json + pytorch_model.bin with weight_g/weight_v names."""
    if not legacy and not prefix:
        hf.save_pretrained(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    hf.config.to_json_file(folder / "config.json")
    sd = legacy_weight_norm(hf.state_dict()) if legacy else hf.state_dict()
    torch.save({prefix + k: v for k, v in sd.items()}, folder / "pytorch_model.bin")
    return folder


def tiny_mert_folder(tmp_path: Path, **kw) -> tuple[Path, object]:
    torch.manual_seed(0)
    hf = perturb_(transformers.HubertModel(hubert_config(MERT_TINY)), 0).eval()
    return write_hf_folder(tmp_path / "mert", hf, **kw), hf


def tiny_musicfm_file(tmp_path: Path, **kw) -> tuple[Path, RefMusicFM25Hz]:
    torch.manual_seed(0)
    ref = perturb_(RefMusicFM25Hz(MUSICFM_TINY), 0).eval()
    return write_musicfm_release(tmp_path / "mfm", ref, 5.0, 15.0, **kw), ref


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():  # non-official file names: expected here
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# -- full-size oracles through the files --------------------------------------------------------

@pytest.fixture(scope="module")
def mert_full(tmp_path_factory):
    torch.manual_seed(0)
    hf = perturb_(transformers.HubertModel(hubert_config(MERT_V1_95M)), 0).eval()
    root = tmp_path_factory.mktemp("mert_full")
    return hf, write_hf_folder(root / "hf", hf), write_hf_folder(root / "legacy", hf, legacy=True)


@pytest.mark.slow
@torch.no_grad()
def test_mert_full_size_loads_and_matches_hubert(mert_full, capsys):
    hf, folder, legacy = mert_full
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    x = audio(3.0, batch=2)
    theirs = hidden_by_hooks(hf.encoder.layers[:6], lambda: hf(x))
    ours = load_backbone("mert-v1-95m", str(folder), num_layers=6, normalize_input=False).eval()
    diffs = max_diffs(ours(x), theirs)
    with capsys.disabled():
        print(f"\nMERT-v1-95M vs HubertModel, max abs diff per layer 1..6: {[f'{d:.2e}' for d in diffs]}")
    assert max(diffs) <= TOL, diffs
    # old weight_g/weight_v names in a pytorch_model.bin: the very same weights
    old = load_backbone("mert-v1-95m", str(legacy / "pytorch_model.bin"), num_layers=6, normalize_input=False)
    a, b = ours.state_dict(), old.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # exactly what is dropped from the real key set
    conv = convert_mert(hf.state_dict(), num_layers=6)
    assert not conv.unexpected
    assert {k for k in conv.dropped if not k.startswith("encoder.layers.")} == {"masked_spec_embed"}
    assert {int(k.split(".")[2]) for k in conv.dropped if k.startswith("encoder.layers.")} == set(range(6, 12))


@pytest.fixture(scope="module")
def musicfm_full(tmp_path_factory):
    torch.manual_seed(0)
    ref = perturb_(RefMusicFM25Hz(), 0).eval()
    path = write_musicfm_release(tmp_path_factory.mktemp("musicfm_full"), ref, mean=5.5, std=17.0)
    return ref, path


@pytest.mark.slow
@torch.no_grad()
def test_musicfm_full_release_keyset_loads_and_matches(musicfm_full, capsys):
    ref, path = musicfm_full
    x = audio(3.0, batch=2)
    theirs = ref.hidden_states(x, 5.5, 17.0)
    raw = hidden_by_hooks(ref.conformer.layers[:6], lambda: ref.hidden_states(x, 5.5, 17.0))
    with pytest.warns(UserWarning, match="not an official MusicFM file name"):
        full = load_backbone("musicfm-msd", str(path), num_layers=12).eval()
    assert (full.frontend.mean, full.frontend.std) == (5.5, 17.0)
    d12 = max_diffs(full(x), theirs)
    del full
    six = quiet(load_backbone, "musicfm-msd", str(path.parent), num_layers=6).eval()
    d6 = max_diffs(six(x), raw)
    with capsys.disabled():
        print(f"\nMusicFM vs MusicFM25Hz reference (12 layers): {[f'{d:.2e}' for d in d12]}"
              f"\nMusicFM truncated to 6 layers vs raw layer outputs: {[f'{d:.2e}' for d in d6]}")
    assert max(d12) <= TOL and max(d6) <= TOL, (d12, d6)
    # every key of the release is accounted for, and the unused ones are exactly these
    sd = torch.load(path, weights_only=True)["state_dict"]
    conv = convert_musicfm(sd, num_layers=12)
    assert not conv.unexpected and set(conv.dropped) == MUSICFM_UNUSED_KEYS
    conv6 = convert_musicfm(sd, num_layers=6)
    extra = set(conv6.dropped) - MUSICFM_UNUSED_KEYS
    assert extra == {k for k in (key.removeprefix("model.") for key in sd)
                     if k.startswith("conformer.layer_norm.")
                     or (k.startswith("conformer.layers.") and int(k.split(".")[2]) >= 6)}


# -- MERT: names, prefixes, config ---------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("variant", [{}, {"legacy": True}, {"prefix": "hubert."}, {"prefix": "model."},
                                     {"legacy": True, "prefix": "mert_model."}])
def test_mert_key_variants_load(tmp_path, variant):
    folder, hf = tiny_mert_folder(tmp_path, **variant)
    model = build_backbone("mert-tiny", num_layers=4, normalize_input=False).eval()
    load_pretrained(model, folder)
    x = audio(1.0)
    assert max(max_diffs(model(x), hidden_by_hooks(hf.encoder.layers[:4], lambda: hf(x)))) <= TOL


def test_mert_reverse_mapping_round_trips():
    model = build_backbone("mert-tiny", num_layers=None)
    sd = model.state_dict()
    for legacy in (False, True):
        official = mert_ours_to_official(sd, legacy_weight_norm=legacy)
        assert ("encoder.pos_conv_embed.conv.weight_g" in official) == legacy
        back = mert_official_to_ours(official)
        assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    hf = transformers.HubertModel(hubert_config(MERT_TINY))
    names = set(hf.state_dict()) - {"masked_spec_embed"}
    assert set(mert_ours_to_official(sd)) == names  # our names cover HubertModel's exactly


@pytest.mark.parametrize("field,value,match", [
    ("hidden_size", 96, "hidden_size=96"),
    ("num_hidden_layers", 24, "num_hidden_layers=24"),
    ("conv_kernel", [10, 3, 3, 3, 3, 2, 3], "conv_kernel"),
    ("do_stable_layer_norm", True, "do_stable_layer_norm"),
    ("feat_extract_norm", "layer", "feat_extract_norm"),
    ("conv_bias", True, "conv_bias"),
    ("feature_extractor_cqt", True, "feature_extractor_cqt"),
    ("sample_rate", 16000, "sample_rate"),
    ("num_attention_heads", None, "missing fields"),
])
def test_mert_config_mismatch_fails(tmp_path, field, value, match):
    folder, _ = tiny_mert_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if value is None:
        del config[field]
    else:
        config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        load_pretrained(build_backbone("mert-tiny"), folder)


def test_mert_config_of_the_release_passes():
    """The fields of m-a-p/MERT-v1-95M's config.json that we check (its MERTConfig extras included)."""
    config = hubert_config(MERT_V1_95M).to_dict()
    config.update(feature_extractor_cqt=False, deepnorm=False, attention_relax=-1.0, sample_rate=24000)
    check_mert_config(config, MERT_V1_95M)


def test_mert_wrong_extra_missing_keys_fail(tmp_path):
    folder, hf = tiny_mert_folder(tmp_path, legacy=True)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    bad = dict(sd)
    bad["encoder.layers.0.attention.rel_bias.weight"] = torch.zeros(3)
    del bad["encoder.layers.1.feed_forward.output_dense.bias"]
    torch.save(bad, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(build_backbone("mert-tiny"), folder)
    msg = str(err.value)
    assert "missing keys (1): layers.1.ffn.fc2.bias (official encoder.layers.1.feed_forward.output_dense.bias)" in msg
    assert "unexpected keys (1): encoder.layers.0.attention.rel_bias.weight" in msg
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_pretrained(build_backbone("mert-tiny"), folder)


# -- MusicFM: key set, errors, checksums, pickle -------------------------------------------------

@torch.no_grad()
def test_musicfm_tiny_release_loads_with_warnings_and_matches(tmp_path):
    path, ref = tiny_musicfm_file(tmp_path)
    model = build_backbone("musicfm-tiny", num_layers=None).eval()
    with pytest.warns(UserWarning, match="not an official MusicFM file name") as rec:
        load_pretrained(model, path)
    assert len(rec) == 2  # the .pt and the stats file
    x = audio(1.0)
    assert max(max_diffs(model(x), ref.hidden_states(x, 5.0, 15.0))) <= TOL
    # the reverse map gives back the release's names (the pos-conv we never build aside)
    ours = set(musicfm_ours_to_official(model.state_dict()))
    release = {"model." + k for k in ref.state_dict()}
    assert ours <= release
    assert {k.removeprefix("model.") for k in release - ours} <= MUSICFM_UNUSED_KEYS | {
        "conformer.pos_conv_embed.conv.parametrizations.weight.original0",
        "conformer.pos_conv_embed.conv.parametrizations.weight.original1"}


@pytest.mark.parametrize("edit,expect", [
    (lambda sd: sd.pop("model.conformer.layers.0.ffn1.output_dense.bias"),
     ["missing keys (1): layers.0.ffn1.fc2.bias (official conformer.layers.0.ffn1.output_dense.bias)"]),
    (lambda sd: sd.__setitem__("model.conformer.layers.0.self_attn.linear_pos.weight", torch.zeros(2)),
     ["unexpected keys (1): conformer.layers.0.self_attn.linear_pos.weight"]),
    (lambda sd: sd.__setitem__("model.conv.lin.weight", sd.pop("model.conv.linear.weight")),
     ["missing keys (1): subsample.linear.weight", "unexpected keys (1): conv.lin.weight"]),
    (lambda sd: sd.__setitem__("model.conformer.layer_norm.weight", torch.ones(7)),
     ["shape mismatches (1): conformer.layer_norm.weight: (7,) in the file, (64,) in the model"]),
    (lambda sd: sd.__setitem__("model.conformer.layers.6.final_layer_norm.weight", torch.ones(64)),
     ["unexpected keys (1): conformer.layers.6.final_layer_norm.weight"]),
])
def test_musicfm_wrong_missing_extra_keys_fail(tmp_path, edit, expect):
    path, _ = tiny_musicfm_file(tmp_path, edit=edit)
    with pytest.raises(CheckpointError) as err:
        quiet(load_pretrained, build_backbone("musicfm-tiny", num_layers=None), path)
    for text in expect:
        assert text in str(err.value)


def test_musicfm_official_names_need_official_md5(tmp_path):
    path, _ = tiny_musicfm_file(tmp_path)
    folder = path.parent
    # official stats name, other bytes -> md5 error before the big file is even read
    (folder / "musicfm_random_stats.json").rename(folder / "msd_stats.json")
    with pytest.raises(CheckpointError, match="md5 .* is not the official msd_stats.json"):
        quiet(load_pretrained, build_backbone("musicfm-tiny"), path)
    (folder / "msd_stats.json").rename(folder / "my_stats.json")
    # official checkpoint name, other bytes -> md5 error
    path.rename(folder / "pretrained_msd.pt")
    with pytest.raises(CheckpointError, match="md5 .* is not the official pretrained_msd.pt"):
        quiet(load_pretrained, build_backbone("musicfm-tiny"), folder)
    # a folder with no checkpoint at all
    (folder / "pretrained_msd.pt").unlink()
    with pytest.raises(CheckpointError, match="expected pretrained_msd.pt"):
        load_pretrained(build_backbone("musicfm-tiny"), folder)


def test_musicfm_pickle_allow_list_is_exact(tmp_path):
    """torch.Size and set (in the release's pickle) load; anything else is refused, never unpickled."""
    assert set(MUSICFM_PICKLE_GLOBALS) == {torch.Size, set}
    path, _ = tiny_musicfm_file(tmp_path)
    obj = torch.load(path, weights_only=True)
    assert isinstance(obj["hyper_parameters"]["input_shape"], torch.Size)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["args"] = argparse.Namespace(lr=1e-4)  # e.g. a Lightning hparams object
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*Unsupported global: GLOBAL argparse.Namespace"):
        quiet(load_pretrained, build_backbone("musicfm-tiny"), path)


def test_musicfm_num_batches_tracked_float_is_cast(tmp_path):
    path, _ = tiny_musicfm_file(tmp_path)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert sd["model.conv.conv.0.bn1.num_batches_tracked"].dtype == torch.float32
    model = build_backbone("musicfm-tiny")
    quiet(load_pretrained, model, path)
    nbt = model.subsample.blocks[0].bn1.num_batches_tracked
    assert nbt.dtype == torch.long and nbt.item() == 12345


# -- fetching -----------------------------------------------------------------------------------

@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


@pytest.mark.parametrize("name,repo,files", [
    ("mert-v1-95m", "m-a-p/MERT-v1-95M", ["config.json", "pytorch_model.bin"]),
    ("musicfm-msd", "minzwon/MusicFM", ["pretrained_msd.pt", "msd_stats.json"]),
])
def test_offline_without_files_says_what_to_download(offline_hub, name, repo, files):
    with pytest.raises(CheckpointError) as err:
        load_backbone(name, None, num_layers=1)
    msg = str(err.value)
    for text in [repo, *files, f"https://huggingface.co/{repo}", "backbone.checkpoint"]:
        assert text in msg, text


def fill_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub leaves behind: refs/main -> snapshots/<commit>/<file>."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)


def test_fetch_uses_the_cache_without_network(offline_hub, tmp_path):
    folder, _ = tiny_mert_folder(tmp_path, legacy=True)
    fill_hub_cache(offline_hub, "m-a-p/MERT-v1-95M", {n: folder / n for n in ("config.json", "pytorch_model.bin")})
    got = fetch_official("mert")
    assert got["pytorch_model.bin"].name == "pytorch_model.bin"
    load_pretrained(build_backbone("mert-tiny"), None)  # offline, from the cache
    # a cached file under the official MusicFM name is still checked against the release's md5
    path, _ = tiny_musicfm_file(tmp_path)
    fill_hub_cache(offline_hub, "minzwon/MusicFM",
                   {"pretrained_msd.pt": path, "msd_stats.json": path.parent / "musicfm_random_stats.json"})
    with pytest.raises(CheckpointError, match="not the official msd_stats.json"):
        load_pretrained(build_backbone("musicfm-tiny"), None)
