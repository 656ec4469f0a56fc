"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", Sec. 3, Eq. 1-2).

Each set's manifold is the union of balls around its points, each ball reaching the point's k-th
nearest neighbour within the same set (itself excluded). Precision is the fraction of generated
points inside the real manifold; recall the fraction of real points inside the generated one.
Features are VGG16 fc2 activations rounded to float16 (as upstream); distances are computed in
float32, in row and column batches, so memory stays at [row_batch, col_batch].
"""

from __future__ import annotations

import numpy as np
import torch

from metrics import metric_utils

# ----------------------------------------------------------------------------


def _col_batches(cols: torch.Tensor, col_batch_size: int):
    for start in range(0, cols.shape[0], col_batch_size):
        yield start, cols[start:start + col_batch_size]


def knn_radii(manifold: torch.Tensor, k: int, opts: metric_utils.MetricOptions, row_batch_size: int,
              col_batch_size: int) -> torch.Tensor:
    """Distance from each manifold point to its k-th nearest other manifold point [N]."""
    if manifold.shape[0] <= k:
        raise ValueError(f'precision/recall: needs more than k = {k} points per set, got {manifold.shape[0]}')

    def rows_fn(rows: range) -> torch.Tensor:
        x = manifold[rows.start:rows.stop]
        best = torch.full([x.shape[0], 0], float('inf'), device=x.device)
        for _, cols in _col_batches(manifold, col_batch_size):
            d = torch.cat([best, torch.cdist(x, cols)], dim=1)
            best = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
        return best[:, k:k + 1]  # Index 0 is the point itself (distance 0).

    radii = metric_utils.map_sharded(opts, manifold.shape[0], row_batch_size, rows_fn, what='k-NN radii')
    return torch.from_numpy(radii[:, 0]).to(manifold.device)


def inside_manifold(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor,
                    opts: metric_utils.MetricOptions, row_batch_size: int, col_batch_size: int) -> np.ndarray:
    """For each probe, whether some manifold point m has |probe - m| <= radius(m) [P] (bool)."""
    def rows_fn(rows: range) -> torch.Tensor:
        x = probes[rows.start:rows.stop]
        hit = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for start, cols in _col_batches(manifold, col_batch_size):
            hit |= (torch.cdist(x, cols) <= radii[start:start + cols.shape[0]]).any(dim=1)
        return hit.float()[:, None]

    return metric_utils.map_sharded(opts, probes.shape[0], row_batch_size, rows_fn, what='probes')[:, 0] > 0.5


def precision_recall_from_features(real: np.ndarray, gen: np.ndarray, nhood_size: int = 3,
                                   row_batch_size: int = 10000, col_batch_size: int = 10000,
                                   opts: metric_utils.MetricOptions | None = None) -> tuple[float, float]:
    """(precision, recall) of generated features against real ones."""
    opts = opts or metric_utils.MetricOptions()
    real_t = torch.as_tensor(np.asarray(real, np.float32), device=opts.device)
    gen_t = torch.as_tensor(np.asarray(gen, np.float32), device=opts.device)
    if real_t.ndim != 2 or gen_t.ndim != 2 or real_t.shape[1] != gen_t.shape[1]:
        raise ValueError(f'precision/recall: mismatched features {list(real_t.shape)} and {list(gen_t.shape)}')
    results = []
    for manifold, probes in [(real_t, gen_t), (gen_t, real_t)]:
        radii = knn_radii(manifold, nhood_size, opts, row_batch_size, col_batch_size)
        results.append(float(inside_manifold(probes, manifold, radii, opts, row_batch_size, col_batch_size).mean()))
    return results[0], results[1]


def compute_pr(opts: metric_utils.MetricOptions, num_gen: int, max_real: int | None, nhood_size: int,
               row_batch_size: int, col_batch_size: int) -> tuple[float, float]:
    """(precision, recall) of the generator; the distance work is split over ranks."""
    extractor = metric_utils.DetectorFeatures(opts, 'vgg16', return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, extractor, max_items=max_real, capture_all=True,
                                                          store_dtype='float16')
    gen = metric_utils.compute_feature_stats_for_generator(opts, extractor, num_gen, capture_all=True,
                                                           store_dtype='float16')
    return precision_recall_from_features(real.get_all(), gen.get_all(), nhood_size, row_batch_size,
                                          col_batch_size, opts)
