"""Cached front end for PETL training (issue 11, item 4).

A cached window's frames are the front end of exactly its audio crop, so the layers give the same
outputs as from the crop. Tolerance: the cache runs the front end on batches of 8 windows, the
reference on one crop at a time; batched convolutions round differently: over every window of the
20 training clips, both tiny backbones, both crop settings, the largest difference observed was
3.2e-6 on the front end's output and on the layers' (values of order 1): atol 2e-5, rtol 0. A
window of the wrong crop (one hop off) differs by > 0.1. Edges: the last window of a clip is aligned to the
clip's end (no audio left out); a clip shorter than a crop is one window, zero-padded at the end
exactly as the audio path (CropDataset) pads it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SEGMENT_SECONDS, Recorder, fixture_params
from musicpetl.backbones import load_from_params
from musicpetl.checkpointing import store_fingerprint
from musicpetl.errors import InputError
from musicpetl.frontend_cache import FrontendCache, ensure, frontend_fingerprint, window_starts

ATOL = 2e-5
LAYERS = 2


def test_window_starts_cover_the_clip():
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(110, 40, 40) == [0, 40, 70]  # the last one aligned to the end
    assert window_starts(40, 40, 10) == [0]
    assert window_starts(25, 40, 10) == [0]  # shorter than a crop: one (padded) window


@pytest.mark.parametrize("name", ["mert-tiny", "musicfm-tiny"])
@pytest.mark.parametrize("crop_seconds,hop_seconds", [(1.0, 0.5), (3.0, 1.0)])  # 3 s > the 2 s clips: padded
def test_cached_windows_give_the_layer_outputs_of_their_audio_crops(name, crop_seconds, hop_seconds, tiny_store,
                                                                    genre_task, tmp_path, torch_threads):
    from musicpetl.data.loaders import CropDataset

    p = fixture_params({"backbone.name": name, "backbone.num_layers": LAYERS})
    backbone = load_from_params(p.backbone, p.seed)
    sr = backbone.sample_rate
    crop, hop = int(crop_seconds * sr), int(hop_seconds * sr)
    cache = ensure(tmp_path, tiny_store, "train", backbone, crop, hop, "float32", store_fingerprint(tiny_store),
                   batch_size=8, progress=False)
    rows = tiny_store.rows("train")
    crops = CropDataset(tiny_store, "train", genre_task, crop)
    backbone.eval()
    checked = 0
    with torch.no_grad():
        for i in (0, len(rows) - 1):
            starts = window_starts(rows[i]["length"], crop, hop)
            assert cache.count[i] == len(starts)
            for k, s in enumerate(starts):
                frames = torch.from_numpy(cache.frames(int(cache.first[i]) + k))[None]
                r = s  # CropDataset's start is r mod (length - crop + 1): r = s gives the crop at s
                wave = crops[(i, r)][0][None]
                assert crops.start(i, r) == (s if rows[i]["length"] >= crop else 0)
                np.testing.assert_allclose(frames, backbone.embed(wave), rtol=0, atol=ATOL)
                from_frames = backbone.encode(frames, LAYERS)
                from_audio = backbone(wave, LAYERS)
                for a, b in zip(from_frames, from_audio):
                    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
                checked += 1
            if len(starts) > 1:  # a neighbouring window is a different crop: the check can fail
                other = torch.from_numpy(cache.frames(int(cache.first[i]) + 1))[None]
                wave0 = crops[(i, starts[0])][0][None]
                assert (backbone.encode(other, LAYERS)[-1] - backbone(wave0, LAYERS)[-1]).abs().max() > 0.1
    assert checked >= 2


def test_the_cache_is_built_once_and_checked(tiny_store, tmp_path, capsys):
    p = fixture_params({"backbone.num_layers": LAYERS})
    backbone = load_from_params(p.backbone, p.seed)
    data = store_fingerprint(tiny_store)
    first = ensure(tmp_path, tiny_store, "train", backbone, 24000, 12000, "float16", data, progress=False)
    assert "caching the front end of 60 training windows" in capsys.readouterr().err  # 20 clips x 3, estimate shown
    assert first.frames(0).dtype == np.float16
    (path,) = tmp_path.glob("*.h5")
    stamp = path.stat().st_mtime_ns
    ensure(tmp_path, tiny_store, "train", backbone, 24000, 12000, "float16", data, progress=False)
    assert path.stat().st_mtime_ns == stamp and "caching" not in capsys.readouterr().err  # reused
    other = load_from_params(fixture_params({"backbone.num_layers": LAYERS, "seed": 1}).backbone, 1)
    with pytest.raises(InputError, match="front end's weights differ"):
        FrontendCache(path, expect=frontend_fingerprint(other, data, 24000, 12000, "float16"))
    with pytest.raises(InputError, match="hop differs"):
        FrontendCache(path, expect=frontend_fingerprint(backbone, data, 24000, 6000, "float16"))


def test_a_cache_the_disk_cannot_hold_is_refused_before_it_starts(tiny_store, tmp_path, monkeypatch):
    import shutil

    from musicpetl import frontend_cache
    from musicpetl.errors import EnvironmentProblem

    p = fixture_params({"backbone.num_layers": LAYERS})
    backbone = load_from_params(p.backbone, p.seed)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(frontend_cache.shutil, "disk_usage", lambda path: usage._replace(free=512 << 20))
    with pytest.raises(EnvironmentProblem, match=r"needs 0\.0 GiB \(\+1 GiB margin\) but .* has 0\.5 GiB free.*float16"):
        ensure(tmp_path, tiny_store, "train", backbone, 24000, 12000, "float32", store_fingerprint(tiny_store),
               progress=False)
    assert not list(tmp_path.glob("*.h5*"))  # nothing written


def test_training_on_cached_frames(tiny_store, genre_task, tmp_path, torch_threads):
    from musicpetl.run_io import load_run
    from musicpetl.train import train

    p = fixture_params({"backbone.num_layers": LAYERS, "backbone.segment_seconds": SEGMENT_SECONDS,
                        "petl.method": "lora", "train.cache_frontend": True, "train.frontend_hop_seconds": 0.5,
                        "train.max_steps": 12, "train.eval_every": 6, "train.lr": 0.01, "train.batch_size": 5,
                        "train.crop_seconds": 1.0})
    live = Recorder()

    summary = train(p, genre_task, tiny_store, None, tmp_path / "run.safetensors", live=live, progress=False,
                    frontend_root=tmp_path / "frontend")
    assert len(list((tmp_path / "frontend").glob("*.h5"))) == 1
    assert len(live.losses) == 12 and summary["trainable_backbone_params"] > 0
    assert load_run(tmp_path / "run.safetensors").method == "lora"


def test_cached_front_end_is_refused_when_the_front_end_trains(tiny_store, genre_task, tmp_path):
    from musicpetl.train import train

    p = fixture_params({"backbone.num_layers": LAYERS, "petl.method": "finetune", "train.cache_frontend": True,
                        "train.max_steps": 1})
    with pytest.raises(InputError, match="cache_frontend: true needs a frozen front end.*finetune"):
        train(p, genre_task, tiny_store, None, tmp_path / "run.safetensors", progress=False,
              frontend_root=tmp_path / "frontend")
    assert not (tmp_path / "frontend").exists()
