"""The closed-form ridge of the histology path."""

from __future__ import annotations

import numpy as np
import pytest

from diffst_sc.model import Ridge


def test_matches_scikit_learn_on_standardised_inputs():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + 4
    y = x @ rng.normal(size=(5, 2)) + rng.normal(size=(60, 2))
    ours = Ridge.fit(x, y, alpha=7.0)
    xs = (x - x.mean(0)) / x.std(0)
    ref = sklearn.Ridge(alpha=7.0).fit(xs, y)
    np.testing.assert_allclose(ours.predict(x), ref.predict(xs), rtol=1e-8, atol=1e-8)


def test_weights_count_like_repeated_rows():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 1))
    twice = Ridge.fit(np.r_[x, x[:5]], np.r_[y, y[:5]], alpha=2.0)
    weighted = Ridge.fit(x, y, alpha=2.0, weight=np.r_[np.full(5, 2.0), np.ones(15)])
    np.testing.assert_allclose(twice.predict(x), weighted.predict(x), atol=1e-10)


def test_round_trip_and_constant_inputs():
    x = np.c_[np.arange(10.0), np.ones(10)]
    r = Ridge.fit(x, 2 * x[:, :1], alpha=1e-9)
    assert np.isfinite(r.coef).all() and r.coef[1, 0] == 0  # no weight on a constant, no NaN
    r2 = Ridge.from_dict(r.to_dict())
    np.testing.assert_allclose(r2.predict(x), 2 * x[:, :1], atol=1e-6)


def test_refuses_no_weight():
    with pytest.raises(ValueError, match="no sample"):
        Ridge.fit(np.ones((3, 1)), np.ones((3, 1)), 1.0, weight=np.zeros(3))


def test_own_inputs_match_a_ridge_per_output():
    """Each output's own input is one more column only that output sees, with its own penalty."""
    rng = np.random.default_rng(3)
    n, d, k = 120, 4, 3
    x, own = rng.normal(size=(n, d)), rng.normal(size=(n, k))
    y = x @ rng.normal(size=(d, k)) + 2.0 * own + 0.1 * rng.normal(size=(n, k))
    r = Ridge.fit(x, y, 5.0, own=own, own_alpha=0.5)
    same = Ridge.fit(x, y, 5.0, own=own)  # by default penalised like the shared inputs
    for j in range(k):
        a = np.c_[x, own[:, j]]
        a = (a - a.mean(0)) / a.std(0)
        yc = y[:, j] - y[:, j].mean()
        c = np.linalg.solve(a.T @ a + np.diag([5.0] * d + [0.5]), a.T @ yc)
        np.testing.assert_allclose(same.own_coef[j],
                                   np.linalg.solve(a.T @ a + 5.0 * np.eye(d + 1), a.T @ yc)[d],
                                   rtol=1e-8)
        np.testing.assert_allclose(r.coef[:, j], c[:d], rtol=1e-8)
        np.testing.assert_allclose(r.own_coef[j], c[d], rtol=1e-8)
    a, a_own, offset = r.linear()
    np.testing.assert_allclose(x @ a + own * a_own + offset, r.predict(x, own), atol=1e-10)
    np.testing.assert_allclose(Ridge.from_dict(r.to_dict()).predict(x, own), r.predict(x, own))
    with pytest.raises(ValueError, match="own="):
        r.predict(x)


def test_reduced_rank_keeps_the_leading_output_directions():
    """Outputs driven by one factor: rank 1 keeps the fit, and its weights have rank 1."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 6))
    factor = x @ rng.normal(size=6)
    y = np.outer(factor, rng.normal(size=8)) + 0.05 * rng.normal(size=(200, 8))
    full = Ridge.fit(x, y, 1.0)
    low = full.reduced_rank(x, 1)
    assert np.linalg.matrix_rank(low.coef, tol=1e-8) == 1
    assert np.abs(low.predict(x) - full.predict(x)).max() < 0.05 * np.abs(y).max()
    np.testing.assert_array_equal(low.intercept, full.intercept)


def test_average_of_ridges_predicts_their_mean():
    rng = np.random.default_rng(6)
    x, own = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    y = x[:, :2] + own + 0.1 * rng.normal(size=(50, 2))
    fits = [Ridge.fit(x, y, a, own=own) for a in (0.1, 10.0, 1000.0)]
    mean = Ridge.average(fits)
    np.testing.assert_allclose(mean.predict(x, own),
                               np.mean([f.predict(x, own) for f in fits], 0), atol=1e-12)
    with pytest.raises(ValueError, match="same inputs"):
        Ridge.average([fits[0], Ridge.fit(x[:40], y[:40], 1.0, own=own[:40])])
