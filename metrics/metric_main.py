"""The metric registry, calc_metric (shared by the training loop and calc_metrics.py) and report_metric.

    result = metric_main.calc_metric(metric='fid50k_full', G=G_ema, dataset_kwargs=training_set_kwargs,
                                     num_gpus=1, rank=0, device='cpu')
    metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)

Names follow upstream (fid50k_full, kid50k_full, pr50k3_full, is50k, fid50k, kid50k, pr50k3), plus
short variants for quick runs (fid2k_full, fid10k_full, kid2k_full, pr2k3_full, is2k) and the
detector-free sliced Wasserstein distance (swd2k, swd16k). '_full' metrics use every real image,
without x-flips; the others use the dataset as configured (the first max_real items).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import torch

import dnnlib
from metrics import (frechet_inception_distance, inception_score, kernel_inception_distance, metric_utils,
                     precision_recall, sliced_wasserstein)

# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    compute:          Callable[..., dict[str, float]]  # compute(opts, name, **kwargs) -> {result name: value}.
    kwargs:           dict                             # Sample counts and options of this metric.
    full:             bool = False                     # All reals, no x-flips (max_size=None, xflip=False).


def fid_results(opts, name, **kwargs):
    return {name: frechet_inception_distance.compute_fid(opts, **kwargs)}


def kid_results(opts, name, **kwargs):
    return {name: kernel_inception_distance.compute_kid(opts, **kwargs)}


def pr_results(opts, name, **kwargs):
    precision, recall = precision_recall.compute_pr(opts, **kwargs)
    return {f'{name}_precision': precision, f'{name}_recall': recall}


def is_results(opts, name, **kwargs):
    mean, std = inception_score.compute_is(opts, **kwargs)
    return {f'{name}_mean': mean, f'{name}_std': std}


def swd_results(opts, name, **kwargs):
    per_level, avg = sliced_wasserstein.compute_swd(opts, **kwargs)
    return {name: avg, **{f'{name}_{res}': value for res, value in per_level.items()}}


_KID = dict(num_subsets=100, max_subset_size=1000)
_PR = dict(nhood_size=3, row_batch_size=10000, col_batch_size=10000)

_registry: dict[str, MetricSpec] = {
    # Upstream's recommended metrics.
    'fid50k_full': MetricSpec(fid_results, dict(num_gen=50000, max_real=None), full=True),
    'kid50k_full': MetricSpec(kid_results, dict(num_gen=50000, max_real=1000000, **_KID), full=True),
    'pr50k3_full': MetricSpec(pr_results, dict(num_gen=50000, max_real=200000, **_PR), full=True),
    # Upstream's legacy metrics.
    'fid50k':      MetricSpec(fid_results, dict(num_gen=50000, max_real=50000)),
    'kid50k':      MetricSpec(kid_results, dict(num_gen=50000, max_real=50000, **_KID)),
    'pr50k3':      MetricSpec(pr_results, dict(num_gen=50000, max_real=50000, **_PR)),
    'is50k':       MetricSpec(is_results, dict(num_gen=50000, num_splits=10)),
    # Short variants: fewer generated images, the same real statistics (and cache) as the 50k ones.
    'fid2k_full':  MetricSpec(fid_results, dict(num_gen=2000, max_real=None), full=True),
    'fid10k_full': MetricSpec(fid_results, dict(num_gen=10000, max_real=None), full=True),
    'kid2k_full':  MetricSpec(kid_results, dict(num_gen=2000, max_real=1000000, **_KID), full=True),
    'pr2k3_full':  MetricSpec(pr_results, dict(num_gen=2000, max_real=200000, **_PR), full=True),
    'is2k':        MetricSpec(is_results, dict(num_gen=2000, num_splits=10)),
    # Sliced Wasserstein distance (PGGAN), no pretrained weights: n reals (a seeded subset) vs n generated.
    'swd256':      MetricSpec(swd_results, dict(num_images=256), full=True),     # Quick checks (tests, demo).
    'swd1k':       MetricSpec(swd_results, dict(num_images=1000), full=True),
    'swd2k':       MetricSpec(swd_results, dict(num_images=2000), full=True),
    'swd16k':      MetricSpec(swd_results, dict(num_images=16000), full=True),
}


def register_metric(name: str, compute: Callable[..., dict[str, float]], full: bool = False, **kwargs) -> None:
    """Add (or replace) a metric: compute(opts, name, **kwargs) -> {result name: value}."""
    _registry[name] = MetricSpec(compute, kwargs, full)


def is_valid_metric(metric: str) -> bool:
    return metric in _registry


def list_valid_metrics() -> list[str]:
    return list(_registry.keys())

# ----------------------------------------------------------------------------


def calc_metric(metric: str, G: torch.nn.Module, dataset_kwargs: dict, num_gpus: int = 1, rank: int = 0,
                device: torch.device | str = 'cpu', **opts_kwargs: Any) -> dnnlib.EasyDict:
    """Compute `metric` for G on every rank of the process group (each rank must call it); returns
    EasyDict(results={name: float}, metric, total_time, total_time_str, num_gpus), the same on every rank.

    opts_kwargs: further MetricOptions fields: G_kwargs, detectors (--detector locations), cache,
    cache_dir, seed, batch_size, batch_gen, num_workers, verbose.
    """
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid: {", ".join(list_valid_metrics())}')
    if dataset_kwargs is None or 'class_name' not in dataset_kwargs:
        raise ValueError(f'{metric}: needs the dataset kwargs (class_name, path, ...) of the real images')
    spec = _registry[metric]
    dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)
    if spec.full:
        dataset_kwargs.update(max_size=None, xflip=False)
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, rank=rank,
                                      device=device, **opts_kwargs)

    start = time.time()
    results = spec.compute(opts, metric, **spec.kwargs)
    results = metric_utils.broadcast_object(opts, {k: float(v) for k, v in results.items()})
    total_time = time.time() - start
    return dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=metric, total_time=total_time,
                           total_time_str=dnnlib.format_time(total_time), num_gpus=num_gpus)


def report_metric(result_dict: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> str:
    """Print the JSON line of a result and, with run_dir, append it to <run_dir>/metric-<name>.jsonl.
    Fields as upstream: results, metric, total_time, total_time_str, num_gpus, snapshot_pkl, timestamp."""
    metric = result_dict['metric']
    if snapshot_pkl is not None and run_dir is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    fields = dict(results=dict(result_dict['results']), metric=metric, total_time=result_dict['total_time'],
                  total_time_str=result_dict['total_time_str'], num_gpus=result_dict['num_gpus'],
                  snapshot_pkl=snapshot_pkl, timestamp=time.time())
    line = json.dumps(fields)
    print(line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'at') as f:
            f.write(line + '\n')  # One write: a reader never sees half a line.
    return line
