"""The feature cache that scales (issue 11, item 3): written incrementally and chunked, float16
optional, several layers in one file that probing at any smaller depth reuses, a fingerprint every
reader checks, and the head's choice of layer input (last, mean, learned weighted sum)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from conftest import SEGMENT_SECONDS, fixture_params
from musicpetl.backbones import load_backbone, load_from_params
from musicpetl.errors import InputError
from musicpetl.features import FeatureCache, _ChunkWriter, cache_features, feature_fingerprint

LAYERS = 3


@pytest.fixture(scope="module")
def backbone():
    p = fixture_params({"backbone.num_layers": LAYERS})
    return load_from_params(p.backbone, p.seed)


@pytest.fixture(scope="module")
def cache32(tiny_store, backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("fc") / "features.h5"
    cache_features(tiny_store, backbone, path, LAYERS, SEGMENT_SECONDS, batch_size=4, progress=False)
    return FeatureCache(path)


def test_incremental_cache_equals_per_clip_features(tiny_store, backbone, cache32, torch_threads):
    # segments of several clips share a batch (batch 4, 3 segments per clip): the same numbers as
    # Backbone.features clip by clip, to float32 rounding of batched convolutions (observed <= 2e-7)
    with h5py.File(cache32.path) as h5:
        ds = h5["train/features"]
        assert ds.chunks[1] == 1 and ds.compression == "gzip" and ds.maxshape[0] is None
    for split in ("train", "valid"):
        feats, item, keys = cache32.split(split)
        rows = tiny_store.rows(split)
        assert keys == [r["key"] for r in rows]
        want = [backbone.features(torch.from_numpy(tiny_store.audio(r)), LAYERS, SEGMENT_SECONDS, 8).numpy()
                for r in rows]
        np.testing.assert_array_equal(item, np.concatenate([[i] * len(w) for i, w in enumerate(want)]))
        np.testing.assert_allclose(feats, np.concatenate(want), rtol=0, atol=2e-6)
        assert np.abs(feats[:, 0] - feats[:, -1]).max() > 1e-2  # layers are distinct


def test_float16_and_lzf_store_the_same_values(tiny_store, backbone, cache32, tmp_path):
    path = tmp_path / "f16.h5"
    cache_features(tiny_store, backbone, path, LAYERS, SEGMENT_SECONDS, batch_size=4, progress=False,
                   dtype="float16", compression="lzf")
    f16 = FeatureCache(path)
    feats, item, _ = f16.split("valid")
    assert feats.dtype == np.float16
    ref, ref_item, _ = cache32.split("valid")
    np.testing.assert_array_equal(item, ref_item)
    np.testing.assert_array_equal(feats, ref.astype(np.float16))  # same batches: the fp32 values, rounded once


def test_chunk_writer_holds_less_than_a_chunk(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as h5:
        feats = h5.create_dataset("f", shape=(0, 2, 3), maxshape=(None, 2, 3), chunks=(5, 1, 3), dtype=np.float32)
        item = h5.create_dataset("i", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(8,))
        w = _ChunkWriter(feats, item, rows=5)
        data = np.arange(17 * 6, dtype=np.float32).reshape(17, 2, 3)
        for a in range(0, 17, 3):
            w.append(data[a:a + 3], list(range(a, min(a + 3, 17))))
            assert sum(len(b) for b in w.buf) < 5 and w.n % 5 == 0  # whole chunks on disk, the rest buffered
        w.flush()
        np.testing.assert_array_equal(feats[:], data)
        np.testing.assert_array_equal(item[:], np.arange(17))


def test_a_deeper_cache_serves_probing_at_fewer_layers(tiny_store, backbone, cache32, tmp_path):
    two = load_from_params(fixture_params({"backbone.num_layers": 2}).backbone, 0)
    path = tmp_path / "two.h5"
    cache_features(tiny_store, two, path, 2, SEGMENT_SECONDS, batch_size=4, progress=False)
    cache32.check(feature_fingerprint(two, 2, SEGMENT_SECONDS))  # 3 stored layers serve a 2-layer reader
    np.testing.assert_array_equal(cache32.split("test", 2)[0], FeatureCache(path).split("test", 2)[0])
    np.testing.assert_array_equal(cache32.split("test", layers=2)[0], FeatureCache(path).split("test")[0])


@pytest.mark.parametrize("what,reader,why", [
    ("another seed", lambda: load_backbone("mert-tiny", None, LAYERS, seed=1), "weights differ"),
    ("another backbone", lambda: load_backbone("musicfm-tiny", None, LAYERS, seed=0), "backbone differs"),
    ("no input normalisation", lambda: load_backbone("mert-tiny", None, LAYERS, seed=0, normalize_input=False),
     "options differ"),
    ("more layers", lambda: load_backbone("mert-tiny", None, 4, seed=0), "holds 3 layers, 4 are needed"),
])
def test_a_cache_made_for_something_else_is_refused_naming_both(cache32, what, reader, why):
    other = reader()
    want = feature_fingerprint(other, len(other.layers), SEGMENT_SECONDS)
    with pytest.raises(InputError) as err:
        cache32.check(want)
    msg = str(err.value)
    assert str(cache32.path) in msg and why in msg and msg.count(" segments ") == 2, msg  # both described
    assert other.name in msg and "mert-tiny" in msg


def test_other_segmenting_and_unfingerprinted_caches_are_refused(cache32, backbone, tmp_path):
    with pytest.raises(InputError, match="segment_seconds differs"):
        FeatureCache(cache32.path, expect=feature_fingerprint(backbone, LAYERS, 1.0))
    old = tmp_path / "old.h5"
    old.write_bytes(cache32.path.read_bytes())
    with h5py.File(old, "a") as h5:
        del h5.attrs["fingerprint"]
    FeatureCache(old).split("train", 1)  # still readable as a file ...
    with pytest.raises(InputError, match="without a fingerprint"):  # ... but not accepted by a reader that checks
        FeatureCache(old, expect=feature_fingerprint(backbone, LAYERS, SEGMENT_SECONDS))


@pytest.mark.parametrize("layer_input", ["mean", "weighted"])
def test_head_layer_input_from_cache_equals_the_backbone_in_the_loop(layer_input, tiny_store, genre_task, backbone,
                                                                     cache32, torch_threads):
    from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method

    apply_method(backbone, "probing", {})
    model = PetlModel(backbone, genre_task.n_outputs, LAYERS, method="probing", layer_input=layer_input)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for q in model.head.parameters():
            q.copy_(torch.randn(q.shape, generator=g) * 0.5)
    from_cache = predict_tracks_from_cache(model.head, cache32, "valid", LAYERS, genre_task,
                                           expect=feature_fingerprint(backbone, LAYERS, SEGMENT_SECONDS))
    in_loop = predict_tracks(model, tiny_store, "valid", genre_task, SEGMENT_SECONDS, 8, progress=False)
    np.testing.assert_allclose(from_cache, in_loop, rtol=0, atol=2e-6)  # as tests/test_probing_cache.py
    last = PetlModel(backbone, genre_task.n_outputs, LAYERS, method="probing")
    last.head.net.load_state_dict(model.head.net.state_dict())
    assert np.abs(predict_tracks_from_cache(last.head, cache32, "valid", LAYERS, genre_task) - from_cache).max() > 1e-3


def test_probing_with_learned_layer_weights_trains_them(tiny_store, genre_task, tmp_path, torch_threads):
    from safetensors.torch import load_file

    from musicpetl.train import train

    p = fixture_params({"backbone.num_layers": 2, "backbone.segment_seconds": SEGMENT_SECONDS,
                        "train.layer_input": "weighted", "train.max_steps": 30, "train.eval_every": 10,
                        "train.lr": 0.01, "train.batch_size": 8})
    path = tmp_path / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), path, 2, SEGMENT_SECONDS, progress=False)
    train(p, genre_task, tiny_store, FeatureCache(path), tmp_path / "run.safetensors", progress=False)
    stored = load_file(str(tmp_path / "run.safetensors"))
    assert stored["head.layer_weights"].shape == (2,)
    assert stored["head.layer_weights"].abs().max() > 1e-4  # moved from the uniform start


def test_probing_refuses_a_cache_of_another_backbone(tiny_store, genre_task, cache32, tmp_path):
    from musicpetl.train import train

    p = fixture_params({"backbone.name": "musicfm-tiny", "backbone.num_layers": 2,
                        "backbone.segment_seconds": SEGMENT_SECONDS, "train.max_steps": 1})
    with pytest.raises(InputError, match="musicfm-tiny"):
        train(p, genre_task, tiny_store, cache32, tmp_path / "run.safetensors", progress=False)


def test_a_mean_of_layers_run_says_so_in_its_file(tiny_store, genre_task, tmp_path, torch_threads):
    """A head without parameters of its own (mean of the layers) still leaves a mark in the run file,
    so a reader that would rebuild a last-layer head cannot load it silently."""
    from safetensors.torch import load_file

    from musicpetl.train import train

    p = fixture_params({"backbone.num_layers": 2, "backbone.segment_seconds": SEGMENT_SECONDS,
                        "train.layer_input": "mean", "train.max_steps": 2, "train.eval_every": 2})
    path = tmp_path / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), path, 2, SEGMENT_SECONDS, progress=False)
    train(p, genre_task, tiny_store, FeatureCache(path), tmp_path / "run.safetensors", progress=False)
    assert int(load_file(str(tmp_path / "run.safetensors"))["head.mean_of_layers"]) == 2
