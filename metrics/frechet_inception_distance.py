"""Frechet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", Eq. 6).

FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) over 2048-d Inception pool features; the
covariances are the biased (1/N) sample covariances, as upstream.
"""

from __future__ import annotations

import numpy as np

from metrics import metric_utils

# ----------------------------------------------------------------------------


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2: S1 S2 is similar to A S2 A with A = S1^(1/2), which is
    symmetric PSD, so the trace is the sum of the square roots of its (clipped) eigenvalues. Real by
    construction, unlike a general matrix square root of S1 S2."""
    w, v = np.linalg.eigh(sigma1)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = a @ sigma2 @ a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f'fid: mismatched statistics: means {mu1.shape}, {mu2.shape}; '
                         f'covariances {sigma1.shape}, {sigma2.shape}')
    m = np.square(mu1 - mu2).sum()
    return float(m + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def compute_fid(opts: metric_utils.MetricOptions, num_gen: int, max_real: int | None) -> float:
    """FID of the generator against the real set; valid on rank 0 (NaN elsewhere)."""
    extractor = metric_utils.DetectorFeatures(opts, 'inception', return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=max_real, capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, extractor, num_gen, capture_mean_cov=True)
    if opts.rank != 0:
        return float('nan')
    return fid_from_stats(*real.get_mean_cov(), *gen.get_mean_cov())
