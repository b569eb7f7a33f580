"""Probing on the feature cache is the same model as the backbone in the loop: the head on cached
segment features, averaged per track, equals predict_tracks of a PetlModel (method probing) with
that head, for both tiny backbones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SEGMENT_SECONDS, fixture_params
from musicpetl.backbones import load_from_params
from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
from musicpetl.features import FeatureCache, cache_features
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method

LAYERS = 2
# The two paths compute the same numbers in a different order: the cache pools (B, L, T, d) over T
# and runs the head on every segment of the split at once, then averages per track in float64;
# predict_tracks pools the last layer's (B, T, d), runs the head per batch of segments and averages
# in float32. So they agree to float32 rounding, not bitwise: observed up to 4.8e-7 (4 ulps at 1.0)
# on probabilities in [0, 1]; the tolerance is 2e-6 (16 ulps at 1.0), absolute, no relative part.
# A wrong layer, segment or average moves them by > 1e-3 (checked below).
ATOL = 2e-6


@pytest.mark.parametrize("backbone", ["mert-tiny", "musicfm-tiny"])
def test_cached_probing_predictions_equal_the_backbone_in_the_loop(backbone, tiny_store, genre_task, tmp_path,
                                                                   torch_threads):
    p = fixture_params({"backbone.name": backbone, "backbone.num_layers": LAYERS,
                        "backbone.segment_seconds": SEGMENT_SECONDS, "petl.method": "probing"})
    frozen = load_from_params(p.backbone, p.seed)
    apply_method(frozen, "probing", {})
    model = PetlModel(frozen, genre_task.n_outputs, LAYERS, method="probing")
    with torch.no_grad():  # a head far from uniform outputs, so that a wrong input shows
        g = torch.Generator().manual_seed(1)
        for q in model.head.parameters():
            q.copy_(torch.randn(q.shape, generator=g) * 0.5)

    path = tmp_path / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), path, LAYERS, SEGMENT_SECONDS,
                   batch_size=p.eval.batch_size, progress=False)
    cache = FeatureCache(path)
    for split in ("train", "valid", "test"):
        # several segments per track (2 s tracks, 0.75 s segments: 3 each), so the averaging is tested
        _, item, keys = cache.split(split, LAYERS)
        assert keys == [r["key"] for r in tiny_store.rows(split)]
        assert np.array_equal(np.bincount(item), np.full(len(keys), 3))

        from_cache = predict_tracks_from_cache(model.head, cache, split, LAYERS, genre_task)
        in_loop = predict_tracks(model, tiny_store, split, genre_task, SEGMENT_SECONDS, p.eval.batch_size,
                                 progress=False)
        assert from_cache.shape == in_loop.shape == (len(keys), genre_task.n_outputs)
        np.testing.assert_allclose(from_cache, in_loop, rtol=0, atol=ATOL)
        # the head reads the cache a batch of segments at a time: batches that split tracks give the same
        np.testing.assert_allclose(predict_tracks_from_cache(model.head, cache, split, LAYERS, genre_task,
                                                             batch_rows=2), from_cache, rtol=0, atol=1e-6)

    # the comparison can fail: the previous layer's features give other predictions
    assert np.abs(predict_tracks_from_cache(model.head, cache, "test", LAYERS - 1, genre_task) - in_loop).max() > 1e-3
    assert np.abs(in_loop - in_loop.mean(0)).max() > 1e-2  # the head does not output one constant
