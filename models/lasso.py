"""Shrinkage regressions for many targets at once: LASSO as epftoolbox's LEAR (scikit-learn's LARS picks each
target's penalty by AIC, scikit-learn's coordinate descent fits it), and ridge with its penalty chosen per target by
GCV (a closed form, much faster: the day-ahead backtest's default, see bench/README.md).

``fit_lasso_aic(x, y, previous)`` fits ``y[:, j] ~ x b_j`` for every column
``j`` of ``y``; ``x`` and ``y`` are centred by the caller (the intercept). It
follows epftoolbox's ``LEAR.recalibrate`` as it ran for Lago et al. (2021),
with scikit-learn before 1.1 (whose ``LassoLarsIC`` had ``normalize=True``
and the criterion ``N * MSE / var(y) + 2 df``):

* the penalty: the LASSO path by LARS (``lars_path_gram``) on the columns
  scaled to unit norm, and the path's point of lowest ``RSS / var(y) + 2 df``
  (``df`` the non-zero coefficients);
* the coefficients: ``Lasso(alpha=that penalty)`` on the unscaled columns
  (``lasso_path`` with the precomputed Gram matrix, 2500 iterations at most).

The Gram matrix is computed once for all targets. ``previous`` (the last fit
on the same window, e.g. yesterday's) warm-starts the coordinate descent; with
``reuse_penalty`` its penalties are kept and LARS is skipped (a cheaper
recalibration between penalty choices).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lars_path_gram, lasso_path

__all__ = ["LassoPath", "MAX_ITER", "RIDGE_GRID", "aic_penalty", "fit_lasso_aic", "fit_ridge_gcv"]

#: epftoolbox's ``max_iter`` for both LassoLarsIC and Lasso.
MAX_ITER = 2500


@dataclass(frozen=True)
class LassoPath:
    """A fit: ``best`` the coefficients (features x targets), ``penalties`` each target's penalty (empty for ridge)."""

    best: np.ndarray
    penalties: np.ndarray


def aic_penalty(xy: np.ndarray, gram: np.ndarray, yy: float, n: int) -> float:
    """The LASSO penalty of lowest AIC (``RSS / var(y) + 2 df``) on the exact LARS path of one centred target.

    ``xy`` = X'y and ``gram`` = X'X on columns scaled to unit norm, ``yy`` = y'y.
    """
    alphas, _, path = lars_path_gram(xy, gram, n_samples=n, method="lasso", max_iter=MAX_ITER)
    rss = yy - 2 * xy @ path + np.einsum("fk,fg,gk->k", path, gram, path)
    df = (np.abs(path) > np.finfo(float).eps).sum(axis=0)
    criterion = rss / max(yy / n, np.finfo(float).eps) + 2 * df
    return float(alphas[int(criterion.argmin())])


def fit_lasso_aic(x: np.ndarray, y: np.ndarray, previous: LassoPath | None = None, *,
                  reuse_penalty: bool = False) -> LassoPath:
    n, features = x.shape
    gram = x.T @ x
    xy = x.T @ y  # features x targets
    warm = previous is not None and previous.best.shape == (features, y.shape[1])
    if reuse_penalty and warm and previous.penalties.size == y.shape[1]:
        penalties = previous.penalties
    else:
        norms = np.sqrt(np.diag(gram))
        norms = np.where(norms > 1e-12, norms, 1.0)
        unit_gram = gram / np.outer(norms, norms)
        yy = (y ** 2).sum(axis=0)
        penalties = np.array([aic_penalty(xy[:, j] / norms, unit_gram, yy[j], n) for j in range(y.shape[1])])
    best = np.zeros((features, y.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # as epftoolbox: 2500 iterations, then take what is there
        for j in range(y.shape[1]):
            start = previous.best[:, j] if warm else None
            _, coef, _ = lasso_path(x, y[:, j], alphas=[penalties[j]], precompute=gram, Xy=xy[:, j],
                                    max_iter=MAX_ITER, coef_init=start)
            best[:, j] = coef[:, 0]
    return LassoPath(best, penalties)


#: Ridge penalties as multiples of the mean eigenvalue of the Gram matrix.
RIDGE_GRID = np.geomspace(1e-4, 10.0, 16)


def fit_ridge_gcv(x: np.ndarray, y: np.ndarray, previous: LassoPath | None = None, *,
                  grid: np.ndarray = RIDGE_GRID, **_unused) -> LassoPath:
    """Ridge regression of every column of ``y`` on ``x``, the penalty chosen per column by generalized cross-validation.

    One eigendecomposition of the Gram matrix serves every penalty; RSS comes
    from the Gram matrix too (``|y|^2 - 2 b'X'y + b'X'X b``), so a fit costs
    ``O(N F^2)`` once and ``O(F^2 T)`` per penalty. ``previous`` is unused
    (a closed form needs no warm start); it is there to share ``fit_lasso_aic``'s signature.
    """
    n = x.shape[0]
    gram = x.T @ x
    corr = x.T @ y
    energy = (y ** 2).sum(axis=0)
    eigenvalues, vectors = np.linalg.eigh(gram)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    rotated = vectors.T @ corr  # F x T
    scale = float(eigenvalues.mean()) or 1.0
    best_score = np.full(y.shape[1], np.inf)
    best = np.zeros((x.shape[1], y.shape[1]))
    for factor in grid:
        shrink = 1.0 / (eigenvalues + factor * scale)
        coef = vectors @ (rotated * shrink[:, None])
        rss = energy - 2 * (corr * coef).sum(axis=0) + (coef * (gram @ coef)).sum(axis=0)
        df = float((eigenvalues * shrink).sum())
        score = np.maximum(rss, 1e-12) / max(n - df, 1.0) ** 2
        better = score < best_score
        best_score[better] = score[better]
        best[:, better] = coef[:, better]
    return LassoPath(best, np.zeros(0))
