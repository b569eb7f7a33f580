"""Linear CKA (musicpetl.analysis.correlate) has the invariances Kornblith et al. (2019) prove:
1.0 for identical features, an orthogonal rotation, an isotropic scaling (and a translation: it
centres), near 0 for independent features; and it is not invariant to what it should not be."""
from __future__ import annotations

import numpy as np
import pytest

from musicpetl.analysis.correlate import compare, linear_cka, mean_cosine

N, D = 500, 16
EXACT = 1e-12  # float64 arithmetic on (500, 16) matrices: 1.0 up to rounding (observed <= 7e-16)


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    # correlated, non-centred, unequal-variance columns: nothing that makes CKA trivially 1
    return rng.normal(size=(N, D)) @ rng.normal(size=(D, D)) + rng.normal(size=D) * 3


def rotation(d: int, seed: int = 1) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))  # a uniformly drawn orthogonal matrix


def test_identical_features(feats):
    assert linear_cka(feats, feats) == pytest.approx(1.0, abs=EXACT)


def test_orthogonal_rotation(feats):
    q = rotation(D)
    assert np.allclose(q.T @ q, np.eye(D))
    assert linear_cka(feats, feats @ q) == pytest.approx(1.0, abs=EXACT)


@pytest.mark.parametrize("scale", [1e-3, 0.37, 2.0, 1e4])
def test_isotropic_scaling(feats, scale):
    assert linear_cka(feats, scale * feats) == pytest.approx(1.0, abs=EXACT)


def test_rotation_scaling_and_translation_together(feats):
    assert linear_cka(feats, 3.0 * feats @ rotation(D, 2) + 11.0) == pytest.approx(1.0, abs=EXACT)


def test_float32_features_within_float32_rounding(feats):
    # the pipeline's trained features are float32: 1.0 within 1e-6 (observed 1.2e-7, one ulp)
    x = feats.astype(np.float32)
    assert linear_cka(x, (2.0 * x) @ rotation(D).astype(np.float32)) == pytest.approx(1.0, abs=1e-6)


def test_independent_noise_is_near_zero():
    # For independent isotropic Gaussian (n, d) matrices, E[linear CKA] ~ d / n (here 0.032; 200
    # draws at n=500, d=16: mean 0.031, max 0.039). The bound 2 d / n = 0.064 holds for every draw.
    rng = np.random.default_rng(3)
    for _ in range(5):
        assert 0 <= linear_cka(rng.normal(size=(N, D)), rng.normal(size=(N, D))) < 2 * D / N


def test_not_invariant_to_what_changes_the_representation(feats):
    # an anisotropic scaling (one direction x100) changes the geometry: clearly below 1
    stretch = np.ones(D)
    stretch[0] = 100.0
    assert linear_cka(feats, feats * stretch) < 0.9
    # and the rows matter: pairing each item with another item's features is not the same representation
    assert linear_cka(feats, np.roll(feats, 1, axis=0)) < 0.5


def test_compare_is_per_layer():
    rng = np.random.default_rng(4)
    pre = rng.normal(size=(N, 4, D)) + 1.0
    post = np.stack([pre[:, 0], pre[:, 1] @ rotation(D), 0.5 * pre[:, 2], rng.normal(size=(N, D))], axis=1)
    result = compare(pre, post)
    assert result["cka"][:3] == pytest.approx([1.0, 1.0, 1.0], abs=EXACT)
    assert result["cka"][3] < 2 * D / N
    # mean cosine: 1 for the same and the scaled features, not rotation invariant
    assert result["cosine"][0] == pytest.approx(1.0, abs=EXACT) and result["cosine"][2] == pytest.approx(1.0, abs=EXACT)
    assert result["cosine"][1] < 0.9 and abs(result["cosine"][3]) < 0.2
    assert mean_cosine(pre[:, 0], -pre[:, 0]) == pytest.approx(-1.0, abs=EXACT)
