"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs", Sec. 4):
IS = exp(E_x KL(p(y|x) || p(y))), computed on `num_splits` consecutive splits of the generated set,
reported as mean and standard deviation over splits. p(y|x) are the Inception class probabilities
without the output bias (1008 classes), as upstream.
"""

from __future__ import annotations

import numpy as np

from metrics import metric_utils

# ----------------------------------------------------------------------------


def inception_score_from_probs(probs: np.ndarray, num_splits: int) -> tuple[float, float]:
    """(mean, std) over splits of exp(mean_i sum_y p_iy (log p_iy - log mean_j p_jy))."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] < num_splits:
        raise ValueError(f'inception score: expected probabilities [N >= {num_splits}, classes], '
                         f'got {list(probs.shape)}')
    n = probs.shape[0]
    scores = []
    for k in range(num_splits):
        part = probs[k * n // num_splits:(k + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts: metric_utils.MetricOptions, num_gen: int, num_splits: int) -> tuple[float, float]:
    """(mean, std) Inception Score of the generator; valid on rank 0 (NaN elsewhere)."""
    extractor = metric_utils.DetectorFeatures(opts, 'inception', no_output_bias=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, extractor, num_gen, capture_all=True)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score_from_probs(gen.get_all(), num_splits)
