"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", Sec. 4 / Eq. 4).

KID is the unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3 over Inception features, averaged over `num_subsets` random subsets of
m = min(n_real, n_gen, max_subset_size) items from each set.
"""

from __future__ import annotations

import numpy as np

from metrics import metric_utils

# ----------------------------------------------------------------------------


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples x, y [m, d] with k(a, b) = (a.b / d + 1)^3:
    mean of k over distinct pairs within x and within y, minus twice the mean over all cross pairs."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kid_from_features(real: np.ndarray, gen: np.ndarray, num_subsets: int, max_subset_size: int,
                      seed: int = 0) -> float:
    """Mean of polynomial_mmd2_unbiased over seeded random subsets (without replacement) of both sets."""
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f'kid: mismatched features {list(real.shape)} and {list(gen.shape)}')
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'kid: needs at least 2 items in each set, got {real.shape[0]} real and '
                         f'{gen.shape[0]} generated')
    rng = np.random.default_rng(metric_utils.seed_of(seed, 3))
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        total += polynomial_mmd2_unbiased(x, y)
    return total / num_subsets


def compute_kid(opts: metric_utils.MetricOptions, num_gen: int, max_real: int | None, num_subsets: int,
                max_subset_size: int) -> float:
    """KID of the generator against the real set; valid on rank 0 (NaN elsewhere)."""
    extractor = metric_utils.DetectorFeatures(opts, 'inception', return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, extractor, num_gen, capture_all=True)
    if opts.rank != 0:
        return float('nan')
    return kid_from_features(real.get_all(), gen.get_all(), num_subsets, max_subset_size, seed=opts.seed)
