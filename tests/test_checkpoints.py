"""Official checkpoint files load exactly (every key used or dropped by name) and the loaded models
match their references: transformers' HubertModel saved with save_pretrained or as MERT's
pytorch_model.bin (MERT-v1-95M and MERT-v1-330M), a MusicFM25Hz-shaped model (public code +
transformers' Wav2Vec2ConformerEncoder) saved the way the release is (`state_dict` under `model.`,
torch.Size and set in the pickle, float num_batches_tracked), and the `muq` package's MuQ saved
with its own `save_pretrained` (config.json + model.safetensors, the release's layout).
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

from musicpetl.backbones import BACKBONES, build_backbone, load_backbone
from musicpetl.backbones.checkpoints import CheckpointError, fetch_official, load_pretrained
from musicpetl.backbones.mert import MERT_TINY, MERT_V1_330M, MERT_V1_95M
from musicpetl.backbones.mert_ckpt import (HUB_95M, check_mert_config, convert_mert, mert_official_to_ours,
                                           mert_ours_to_official)
from musicpetl.backbones.musicfm import MUSICFM_TINY
from musicpetl.backbones.musicfm_ckpt import PICKLE_GLOBALS as MUSICFM_PICKLE_GLOBALS
from musicpetl.backbones.musicfm_ckpt import convert_musicfm, musicfm_ours_to_official
from musicpetl.backbones.muq import MUQ_LARGE, MUQ_TINY
from musicpetl.backbones.muq_ckpt import check_muq_config, convert_muq, muq_ours_to_official

from test_backbones import (  # noqa: E402  (shared oracles; tests/ is on sys.path under pytest)
    TOL,
    RefMusicFM25Hz,
    audio,
    hidden_by_hooks,
    hubert_config,
    hubert_hidden,
    max_diffs,
    muq_hidden_states,
    muq_reference,
    muq_release_config,
    perturb_,
    transformers,
)

# the `muq` package builds its Mel-RVQ with the deprecated torch.nn.utils.weight_norm: its warning, not ours
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")


def spec_load(name: str):
    """The registry's loader for `name`: what load_backbone uses."""
    return lambda model, checkpoint: load_pretrained(model, BACKBONES[name].checkpoint, checkpoint)


load_mert, load_musicfm, load_muq = spec_load("mert-v1-95m"), spec_load("musicfm-msd"), spec_load("muq-large-msd-iter")

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


# the MERT-only fields of m-a-p/MERT-v1-330M's config.json (MERTConfig), beside HubertConfig's
MERT_330M_EXTRAS = {"architectures": ["MERTModel"], "model_type": "mert_model", "attention_relax": 32.0,
                    "deepnorm": False, "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336,
                    "sample_rate": 24000, "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig",
                                                       "AutoModel": "modeling_MERT.MERTModel"}}


def write_mert_release(folder: Path, hf, extras=MERT_330M_EXTRAS) -> Path:
    """The layout m-a-p/MERT-v1-330M publishes: config.json (HubertConfig + MERTConfig fields) and a
    pytorch_model.bin of MERTModel (= HubertModel key names, no prefix) with weight_g/weight_v names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**hf.config.to_dict(), **extras}, indent=2))
    torch.save(legacy_weight_norm(hf.state_dict()), folder / "pytorch_model.bin")
    return folder


def tiny_muq_folder(tmp_path: Path, bin_file: bool = False, seed: int = 0):
    """The `muq` package's save_pretrained at toy size (config.json + model.safetensors), or the
    same weights as pytorch_model.bin."""
    ref = muq_reference(MUQ_TINY, seed=seed, mean=5.0, std=15.0)
    folder = tmp_path / "muq"
    ref.save_pretrained(folder)
    if bin_file:
        (folder / "model.safetensors").unlink()
        torch.save(ref.state_dict(), folder / "pytorch_model.bin")
    return folder, ref


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
    with pytest.warns(UserWarning, match="not an official minzwon/MusicFM file name"):
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


@pytest.fixture  # function scope: its 1.3 GB are freed before the next full-size test
def mert330_full(tmp_path):
    torch.manual_seed(0)
    hf = perturb_(transformers.HubertModel(hubert_config(MERT_V1_330M)), 0).eval()
    return hf, write_mert_release(tmp_path / "MERT-v1-330M", hf)


@pytest.mark.slow
@torch.no_grad()
def test_mert_330m_full_size_loads_and_matches_hubert(mert330_full, capsys):
    """MERT-v1-330M (24 x 1024, pre-LN) from its release layout vs HubertModel, every layer."""
    hf, folder = mert330_full
    assert {p.name for p in folder.iterdir()} == {"config.json", "pytorch_model.bin"}
    x = audio(3.0, batch=2)
    theirs = hubert_hidden(hf, x)
    ours = load_backbone("mert-v1-330m", str(folder), num_layers=None, normalize_input=False).eval()
    diffs = max_diffs(ours(x), theirs)
    del ours
    six = load_backbone("mert-v1-330m", str(folder), num_layers=6, normalize_input=False).eval()
    d6 = max_diffs(six(x), theirs[:6])
    with capsys.disabled():
        print(f"\nMERT-v1-330M vs HubertModel, max abs diff per layer 1..24: {[f'{d:.2e}' for d in diffs]}"
              f"\nMERT-v1-330M truncated to 6 layers: {[f'{d:.2e}' for d in d6]}")
    assert len(diffs) == 24 and max(diffs) <= TOL and max(d6) <= TOL, (diffs, d6)
    # exactly what is dropped from the real key set: the mask embedding, layers 7..24 and the closing norm
    conv = convert_mert(torch.load(folder / "pytorch_model.bin", weights_only=True), num_layers=6, total_layers=24,
                        stable_layer_norm=True)
    assert not conv.unexpected
    assert {k for k in conv.dropped if not k.startswith("encoder.layers.")} == {
        "masked_spec_embed", "encoder.layer_norm.weight", "encoder.layer_norm.bias"}
    assert {int(k.split(".")[2]) for k in conv.dropped if k.startswith("encoder.layers.")} == set(range(6, 24))


@pytest.fixture
def muq_full(tmp_path):
    ref = muq_reference(MUQ_LARGE, seed=0, mean=5.5, std=17.0)
    folder = tmp_path / "MuQ-large-msd-iter"
    ref.save_pretrained(folder)  # the package's own writer: the release's layout
    return ref, folder


# every key of a MuQ release that inference never reads (after `model.`), as patterns: the Mel-RVQ
# tokenizer (8 residual codebooks), the prediction head, the [CLS] vector, the unused positional conv
MUQ_UNUSED = (r"rvq\.quantizers\.[0-7]\..+", r"linear\.(weight|bias)", r"cls_token", r"conformer\.pos_conv_embed\..+")


@pytest.mark.slow
@torch.no_grad()
def test_muq_full_release_loads_and_matches_package(muq_full, capsys):
    """MuQ-large-msd-iter (12 x 1024 conformer) from config.json + model.safetensors vs the `muq`
    package's model, every layer; the mel statistics come from config.json's `stat`."""
    import re

    from safetensors.torch import load_file

    ref, folder = muq_full
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    x = audio(3.0, batch=2)
    theirs = muq_hidden_states(ref, x)
    raw = hidden_by_hooks(ref.model.conformer.layers[:6], lambda: ref(x))
    ours = load_backbone("muq-large-msd-iter", str(folder), num_layers=None).eval()
    assert (ours.frontend.mean, ours.frontend.std) == (5.5, 17.0)
    diffs = max_diffs(ours(x), theirs)
    del ours
    six = load_backbone("muq-large-msd-iter", str(folder), num_layers=6).eval()
    d6 = max_diffs(six(x), raw)
    with capsys.disabled():
        print(f"\nMuQ vs the muq package's MuQ, max abs diff per layer 1..12: {[f'{d:.2e}' for d in diffs]}"
              f"\nMuQ truncated to 6 layers vs raw layer outputs: {[f'{d:.2e}' for d in d6]}")
    assert len(diffs) == 12 and max(diffs) <= TOL and max(d6) <= TOL, (diffs, d6)
    sd = load_file(str(folder / "model.safetensors"))
    conv = convert_muq(sd, num_layers=12)
    assert not conv.unexpected and conv.dropped
    assert all(any(re.fullmatch(p, k) for p in MUQ_UNUSED) for k in conv.dropped), sorted(conv.dropped)[:5]
    assert any(k.startswith("rvq.") for k in conv.dropped) and "linear.weight" in conv.dropped


# -- MERT: names, prefixes, config ---------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("variant", [{}, {"legacy": True}, {"prefix": "hubert."}, {"prefix": "model."},
                                     {"legacy": True, "prefix": "mert_model."}])
def test_mert_key_variants_load(tmp_path, variant):
    folder, hf = tiny_mert_folder(tmp_path, **variant)
    model = build_backbone("mert-tiny", num_layers=4, normalize_input=False).eval()
    load_mert(model, folder)
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
        load_mert(build_backbone("mert-tiny"), folder)


def test_mert_config_of_the_release_passes():
    """The fields of m-a-p/MERT-v1-95M's config.json that we check (its MERTConfig extras included)."""
    config = hubert_config(MERT_V1_95M).to_dict()
    config.update(feature_extractor_cqt=False, deepnorm=False, attention_relax=-1.0, sample_rate=24000)
    check_mert_config(config, MERT_V1_95M)
    with pytest.raises(CheckpointError, match="hidden_size=768 .*do_stable_layer_norm=False"):
        check_mert_config(config, MERT_V1_330M)  # a 95M folder given to mert-v1-330m


# m-a-p/MERT-v1-330M's config.json as published (the fields our check reads; HF model page, blame of main)
MERT_330M_RELEASE = {
    "activation_dropout": 0.0, "attention_dropout": 0.0, "attention_relax": 32.0, "conv_bias": False,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "deepnorm": False, "do_stable_layer_norm": True, "feat_extract_activation": "gelu", "feat_extract_norm": "group",
    "feat_proj_dropout": 0.0, "feat_proj_layer_norm": True, "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336, "hidden_act": "gelu", "hidden_dropout": 0.0, "hidden_size": 1024,
    "intermediate_size": 4096, "layer_norm_eps": 1e-05, "layerdrop": 0.0, "num_attention_heads": 16,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_hidden_layers": 24,
    "sample_rate": 24000}


def test_mert_330m_config_of_the_release_passes():
    check_mert_config(MERT_330M_RELEASE, MERT_V1_330M)
    with pytest.raises(CheckpointError, match="hidden_size=1024 .*num_hidden_layers=24.*do_stable_layer_norm=True"):
        check_mert_config(MERT_330M_RELEASE, MERT_V1_95M)


@torch.no_grad()
@pytest.mark.parametrize("safetensors", [True, False])
def test_mert_330m_tiny_release_layout_loads(tmp_path, safetensors):
    """Pre-LN MERT at toy size through both weight files of a Hugging Face folder (the registry's
    mert-v1-330m format), every layer and a truncated load."""
    torch.manual_seed(0)
    cfg = BACKBONES["mert-330m-tiny"].build().cfg
    hf = perturb_(transformers.HubertModel(hubert_config(cfg)), 0).eval()
    folder = write_hf_folder(tmp_path / "m", hf) if safetensors else write_mert_release(tmp_path / "m", hf)
    assert (folder / ("model.safetensors" if safetensors else "pytorch_model.bin")).is_file()
    x = audio(1.0, batch=2)
    theirs = hubert_hidden(hf, x)
    for n in (None, 4):
        model = build_backbone("mert-330m-tiny", num_layers=n, normalize_input=False).eval()
        load_pretrained(model, BACKBONES["mert-v1-330m"].checkpoint, folder)
        assert max(max_diffs(model(x), theirs[:n])) <= TOL
    # our names cover HubertModel's exactly (the mask embedding aside), in both directions
    full = build_backbone("mert-330m-tiny", num_layers=None)
    official = mert_ours_to_official(full.state_dict(), stable_layer_norm=True)
    assert set(official) == set(hf.state_dict()) - {"masked_spec_embed"}
    back = mert_official_to_ours(official, stable_layer_norm=True)
    assert back.keys() == full.state_dict().keys()


# -- MuQ: the release's layout, config, keys ------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("bin_file", [False, True])
def test_muq_tiny_release_loads_and_matches(tmp_path, bin_file):
    folder, ref = tiny_muq_folder(tmp_path, bin_file=bin_file)
    model = build_backbone("muq-tiny", num_layers=None).eval()
    load_muq(model, folder)
    assert (model.frontend.mean, model.frontend.std) == (5.0, 15.0)  # from config.json's `stat`
    x = audio(1.0, batch=2)
    assert max(max_diffs(model(x), muq_hidden_states(ref, x))) <= TOL
    # the reverse map gives back the package's names of everything we hold
    ours = set(muq_ours_to_official(model.state_dict()))
    assert ours <= set(ref.state_dict())
    assert not {k for k in set(ref.state_dict()) - ours
                if not k.startswith(("model.rvq.", "model.linear.", "model.cls_token", "model.conformer.pos_conv_embed."))}


def _edit(config: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        config = config[p]
    if value is None:
        del config[leaf]
    else:
        config[leaf] = value


@pytest.mark.parametrize("path,value,match", [
    ("encoder_dim", 96, "encoder_dim=96"),
    ("encoder_depth", 24, "encoder_depth=24"),
    ("label_rate", 50, "label_rate=50"),
    ("features", ["melspec_2048", "chromagram"], "features"),
    ("w2v2_config.hidden_act", "gelu", "hidden_act='gelu'"),
    ("w2v2_config.position_embeddings_type", "relative", "position_embeddings_type='relative'"),
    ("w2v2_config.num_attention_heads", 8, "num_attention_heads=8"),
    ("w2v2_config.conv_depthwise_kernel_size", None, "missing fields.*conv_depthwise_kernel_size"),
    ("stat", None, "missing fields.*stat"),
    ("stat.melspec_2048_std", 0.0, "not usable"),
])
def test_muq_config_mismatch_fails(tmp_path, path, value, match):
    folder, _ = tiny_muq_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    _edit(config, path, value)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        load_muq(build_backbone("muq-tiny"), folder)


def test_muq_config_of_the_release_passes():
    """Every MuQConfig field (rope-large w2v2_config) at full size; absent top-level fields take the
    package's defaults, as MuQConfig does."""
    config = muq_release_config(MUQ_LARGE)
    assert check_muq_config(config, MUQ_LARGE) == (config["stat"]["melspec_2048_mean"],
                                                     config["stat"]["melspec_2048_std"])
    for name in ("encoder_dim", "encoder_depth", "conv_dim", "hop_length", "n_mels", "label_rate"):
        del config[name]
    check_muq_config(config, MUQ_LARGE)


@pytest.mark.parametrize("edit,expect", [
    (lambda sd: sd.pop("model.conformer.layers.0.ffn1.output_dense.bias"),
     ["missing keys (1): layers.0.ffn1.fc2.bias (official conformer.layers.0.ffn1.output_dense.bias)"]),
    (lambda sd: sd.__setitem__("model.conformer.layers.0.self_attn.linear_pos.weight", torch.zeros(2)),
     ["unexpected keys (1): conformer.layers.0.self_attn.linear_pos.weight"]),
    (lambda sd: sd.__setitem__("model.conformer.layers.0.self_attn.linear_q.weight", torch.zeros(3, 64)),
     ["shape mismatches (1): conformer.layers.0.self_attn.linear_q.weight: (3, 64) in the file, (64, 64)"]),
])
def test_muq_wrong_missing_extra_keys_fail(tmp_path, edit, expect):
    from safetensors.torch import load_file, save_file

    folder, _ = tiny_muq_folder(tmp_path)
    sd = load_file(str(folder / "model.safetensors"))
    edit(sd)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_muq(build_backbone("muq-tiny", num_layers=None), folder)
    for text in expect:
        assert text in str(err.value)


def test_mert_wrong_extra_missing_keys_fail(tmp_path):
    folder, hf = tiny_mert_folder(tmp_path, legacy=True)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    bad = dict(sd)
    bad["encoder.layers.0.attention.rel_bias.weight"] = torch.zeros(3)
    del bad["encoder.layers.1.feed_forward.output_dense.bias"]
    torch.save(bad, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_mert(build_backbone("mert-tiny"), folder)
    msg = str(err.value)
    assert "missing keys (1): layers.1.ffn.fc2.bias (official encoder.layers.1.feed_forward.output_dense.bias)" in msg
    assert "unexpected keys (1): encoder.layers.0.attention.rel_bias.weight" in msg
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_mert(build_backbone("mert-tiny"), folder)


# -- MusicFM: key set, errors, checksums, pickle -------------------------------------------------

@torch.no_grad()
def test_musicfm_tiny_release_loads_with_warnings_and_matches(tmp_path):
    path, ref = tiny_musicfm_file(tmp_path)
    model = build_backbone("musicfm-tiny", num_layers=None).eval()
    with pytest.warns(UserWarning, match="not an official minzwon/MusicFM file name") as rec:
        load_musicfm(model, path)
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
        quiet(load_musicfm, build_backbone("musicfm-tiny", num_layers=None), path)
    for text in expect:
        assert text in str(err.value)


def test_musicfm_official_names_need_official_md5(tmp_path):
    path, _ = tiny_musicfm_file(tmp_path)
    folder = path.parent
    # official stats name, other bytes -> md5 error before the big file is even read
    (folder / "musicfm_random_stats.json").rename(folder / "msd_stats.json")
    with pytest.raises(CheckpointError, match="md5 .* is not the official msd_stats.json"):
        quiet(load_musicfm, build_backbone("musicfm-tiny"), path)
    (folder / "msd_stats.json").rename(folder / "my_stats.json")
    # official checkpoint name, other bytes -> md5 error
    path.rename(folder / "pretrained_msd.pt")
    with pytest.raises(CheckpointError, match="md5 .* is not the official pretrained_msd.pt"):
        quiet(load_musicfm, build_backbone("musicfm-tiny"), folder)
    # a folder with no checkpoint at all
    (folder / "pretrained_msd.pt").unlink()
    with pytest.raises(CheckpointError, match="expected pretrained_msd.pt"):
        load_musicfm(build_backbone("musicfm-tiny"), folder)


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
        quiet(load_musicfm, build_backbone("musicfm-tiny"), path)


def test_musicfm_num_batches_tracked_float_is_cast(tmp_path):
    path, _ = tiny_musicfm_file(tmp_path)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert sd["model.conv.conv.0.bn1.num_batches_tracked"].dtype == torch.float32
    model = build_backbone("musicfm-tiny")
    quiet(load_musicfm, model, path)
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
    ("mert-v1-330m", "m-a-p/MERT-v1-330M", ["config.json", "pytorch_model.bin"]),
    ("musicfm-msd", "minzwon/MusicFM", ["pretrained_msd.pt", "msd_stats.json"]),
    ("muq-large-msd-iter", "OpenMuQ/MuQ-large-msd-iter", ["config.json", "model.safetensors"]),
])
def test_offline_without_files_says_what_to_download(offline_hub, name, repo, files):
    with pytest.raises(CheckpointError) as err:
        load_backbone(name, None, num_layers=1)
    msg = str(err.value)
    for text in [repo, *files, f"https://huggingface.co/{repo}", "backbone.checkpoint", BACKBONES[name].licence]:
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
    got = fetch_official(HUB_95M)
    assert got["weights"].name == "pytorch_model.bin" and got["config"].name == "config.json"
    load_mert(build_backbone("mert-tiny"), None)  # offline, from the cache
    # a cached file under the official MusicFM name is still checked against the release's md5
    path, _ = tiny_musicfm_file(tmp_path)
    fill_hub_cache(offline_hub, "minzwon/MusicFM",
                   {"pretrained_msd.pt": path, "msd_stats.json": path.parent / "musicfm_random_stats.json"})
    with pytest.raises(CheckpointError, match="not the official msd_stats.json"):
        load_musicfm(build_backbone("musicfm-tiny"), None)
