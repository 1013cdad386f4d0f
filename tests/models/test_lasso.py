"""The LASSO of the day-ahead model is epftoolbox's LEAR regression, done by scikit-learn: the penalty of lowest AIC on
the LARS path of unit-norm columns (LassoLarsIC as the paper ran it), then Lasso with that penalty on the columns as
they are."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso, LassoLarsIC

from models.dayahead import _windows
from models.lasso import fit_lasso_aic, fit_ridge_gcv


def _problem(rows: int, features: int = 20, targets: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)) * rng.uniform(0.5, 2.0, features)  # columns of unequal norms
    truth = np.zeros((features, targets))
    truth[[0, 3, 7], :] = [[2.0, -1.0, 0.5], [1.0, 1.0, 1.0], [-1.5, 0.8, 2.0]]
    y = x @ truth + rng.normal(scale=0.5, size=(rows, targets))
    return x - x.mean(axis=0), y - y.mean(axis=0), truth


@pytest.mark.parametrize("rows", [200, 12], ids=["more-days-than-inputs", "fewer-days-than-inputs"])
def test_the_penalty_is_lassolarsics_aic_choice_and_the_coefficients_are_lassos(rows):
    x, y, _ = _problem(rows)
    fit = fit_lasso_aic(x, y)
    unit = x / np.linalg.norm(x, axis=0)
    for j in range(y.shape[1]):
        # sklearn >= 1.1 needs the noise variance given; var(y) is what LassoLarsIC used before (the paper's runs)
        chosen = LassoLarsIC(criterion="aic", noise_variance=np.var(y[:, j]), max_iter=2500).fit(unit, y[:, j]).alpha_
        assert fit.penalties[j] == pytest.approx(chosen, rel=1e-9)
        lasso = Lasso(alpha=chosen, max_iter=2500, tol=1e-10).fit(x, y[:, j])
        np.testing.assert_allclose(fit.best[:, j], lasso.coef_, atol=1e-2)  # within the descent's tolerance


def test_the_lasso_finds_the_few_inputs_that_matter():
    x, y, truth = _problem(300)
    fit = fit_lasso_aic(x, y)
    for j in range(y.shape[1]):
        assert set(np.flatnonzero(np.abs(fit.best[:, j]) > 0.1)) == {0, 3, 7}
    assert np.abs(fit.best - truth).max() < 0.2


def test_a_warm_recalibration_keeping_the_penalties_matches_a_cold_fit_with_them():
    x, y, _ = _problem(200)
    yesterday = fit_lasso_aic(x[:-1], y[:-1])
    today = fit_lasso_aic(x, y, yesterday, reuse_penalty=True)
    np.testing.assert_array_equal(today.penalties, yesterday.penalties)
    cold = [Lasso(alpha=a, max_iter=2500, tol=1e-10).fit(x, y[:, j]).coef_ for j, a in enumerate(today.penalties)]
    np.testing.assert_allclose(today.best, np.column_stack(cold), atol=1e-3)
    assert not np.array_equal(fit_lasso_aic(x, y, yesterday).penalties, yesterday.penalties)  # chosen anew


def test_ridge_shrinks_towards_zero_and_fits_the_signal():
    x, y, truth = _problem(300)
    fit = fit_ridge_gcv(x, y)
    assert np.abs(fit.best - truth).max() < 0.2
    assert fit.penalties.size == 0


def test_a_window_of_w_days_regresses_on_w_minus_its_week_of_lags_as_epftoolbox_cuts_it():
    assert _windows(10_000, (56, 84, 1092, 1456)) == (49, 77, 1085, 1449)
    assert _windows(300, (56, 84, 1092, 1456)) == (49, 77, 300)  # longer windows: the whole history, once
