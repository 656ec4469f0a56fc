"""Feature statistics of real and generated images, split over ranks, with a cache of real statistics.

Work is cut into fixed batches of `batch_size` items; batch b runs on rank b % num_gpus, and every
round of batches is all-gathered so that each rank appends the same features in the same (global)
order. Everything random is seeded per item or per generator chunk, never per rank:
  - generated item i: z and the dataset index of its camera label come from a generator seeded
    with (seed, i);
  - the generator's own randomness (noise inputs, stratified ray jitter) is seeded per chunk of
    `batch_gen` items with (seed, first item of the chunk).
So 1 or N ranks compute the same batches and give the same statistics.

Real statistics are cached as .npz under <cache_dir>/gan-metrics/<dataset>-<detector>-<md5>.npz,
keyed by the dataset kwargs, the detector (content digest and kwargs) and the statistics options.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

import dnnlib
from torch_utils.misc import profiled

# ----------------------------------------------------------------------------


def _dict():
    return dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MetricOptions:
    """Everything a metric needs besides its own sample counts."""

    G:              torch.nn.Module | None = None       # Generator: G(z, c, **G_kwargs)['image'] in [-1, 1].
    G_kwargs:       dict = _dict()                      # Extra generator call kwargs (truncation_psi, ...).
    dataset_kwargs: dict = _dict()                      # construct_class_by_name kwargs of the real images.
    num_gpus:       int = 1                             # Ranks taking part (process group set up by the caller).
    rank:           int = 0                             # This process's rank.
    device:         torch.device = torch.device('cpu')  # Where the generator and the detector run.
    detectors:      Sequence[str] | str | None = None   # --detector locations (directories or NAME=PATH).
    cache:          bool = True                         # Read and write the real-statistics cache.
    cache_dir:      str | None = None                   # Root of the caches; None = dnnlib.make_cache_dir_path().
    seed:           int = 0                             # Seed of everything random in a metric.
    batch_size:     int = 64                            # Items per batch (the unit of work split over ranks).
    batch_gen:      int = 4                             # Items per generator call; must divide batch_size.
    num_workers:    int = min(3, os.cpu_count() or 1)   # DataLoader workers for the real images (upstream: 3).
    verbose:        bool = False                        # Print progress on rank 0.

    def __post_init__(self):
        self.device = torch.device(self.device)
        self.dataset_kwargs = dnnlib.EasyDict(self.dataset_kwargs)
        self.G_kwargs = dnnlib.EasyDict(self.G_kwargs)
        if self.batch_size % self.batch_gen != 0:
            raise ValueError(f'MetricOptions: batch_gen ({self.batch_gen}) must divide batch_size ({self.batch_size})')
        if not 0 <= self.rank < self.num_gpus:
            raise ValueError(f'MetricOptions: rank {self.rank} is outside [0, {self.num_gpus})')

    def log(self, *args) -> None:
        if self.verbose and self.rank == 0:
            print(*args, flush=True)

    def cache_path(self, *parts: str) -> str:
        return (os.path.join(self.cache_dir, *parts) if self.cache_dir is not None
                else dnnlib.make_cache_dir_path(*parts))


def distributed(opts: MetricOptions) -> bool:
    return opts.num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def broadcast_object(opts: MetricOptions, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not distributed(opts):
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def seed_of(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot([1 << 31, 1]))

# ----------------------------------------------------------------------------


class FeatureStats:
    """Features appended in order: all of them (capture_all) and/or float64 running moments (capture_mean_cov)."""

    def __init__(self,
        capture_all:      bool = False,     # Keep every feature vector (KID, PR, IS, SWD).
        capture_mean_cov: bool = False,     # Keep the sum and the sum of outer products (FID).
        max_items:        int | None = None,  # Ignore items beyond this many; None = no limit.
        store_dtype:      str = 'float32',  # dtype of the kept features ('float16' halves SWD's memory).
    ):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.store_dtype = store_dtype
        self.num_items = 0
        self.num_features = None
        self.all_features = []
        self.raw_sum = None
        self.raw_outer = None

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray | torch.Tensor) -> None:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f'FeatureStats: expected features [N, D], got shape {list(x.shape)}')
        if self.num_features is None:
            self.num_features = x.shape[1]
        elif x.shape[1] != self.num_features:
            raise ValueError(f'FeatureStats: got {x.shape[1]} features, earlier batches had {self.num_features}')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x.astype(self.store_dtype))
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            if self.raw_sum is None:
                self.raw_sum = np.zeros(self.num_features, np.float64)
                self.raw_outer = np.zeros([self.num_features] * 2, np.float64)
            self.raw_sum += x64.sum(axis=0)
            self.raw_outer += x64.T @ x64

    def get_all(self) -> np.ndarray:
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], self.store_dtype)
        if len(self.all_features) > 1:
            self.all_features = [np.concatenate(self.all_features, axis=0)]
        return self.all_features[0]

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (biased, 1/N) covariance in float64."""
        assert self.capture_mean_cov and self.num_items > 0
        mean = self.raw_sum / self.num_items
        cov = self.raw_outer / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path: str) -> None:
        """As .npz (plain arrays, loadable with allow_pickle=False), written atomically."""
        arrays = dict(capture_all=self.capture_all, capture_mean_cov=self.capture_mean_cov,
                      max_items=-1 if self.max_items is None else self.max_items, store_dtype=self.store_dtype,
                      num_items=self.num_items, num_features=-1 if self.num_features is None else self.num_features)
        if self.capture_all:
            arrays['all_features'] = self.get_all()
        if self.capture_mean_cov and self.raw_sum is not None:
            arrays.update(raw_sum=self.raw_sum, raw_outer=self.raw_outer)
        with dnnlib.atomic_write_path(path) as tmp:
            with open(tmp, 'wb') as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> 'FeatureStats':
        try:
            with np.load(path, allow_pickle=False) as data:
                obj = cls(capture_all=bool(data['capture_all']), capture_mean_cov=bool(data['capture_mean_cov']),
                          max_items=None if int(data['max_items']) < 0 else int(data['max_items']),
                          store_dtype=str(data['store_dtype']))
                obj.num_items = int(data['num_items'])
                obj.num_features = None if int(data['num_features']) < 0 else int(data['num_features'])
                if obj.capture_all:
                    obj.all_features = [data['all_features']]
                if obj.capture_mean_cov and 'raw_sum' in data:
                    obj.raw_sum, obj.raw_outer = data['raw_sum'], data['raw_outer']
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f'{path}: not a usable feature-statistics cache ({err}); delete it to recompute') from None
        return obj

# ----------------------------------------------------------------------------
# Feature extractors: (uint8 images [N, C, H, W] on the device, item indices [N]) -> features [N, D].


class DetectorFeatures:
    """A TorchScript detector called with fixed kwargs; grayscale images are repeated to 3 channels."""

    def __init__(self, opts: MetricOptions, name: str, **detector_kwargs):
        from metrics import detectors
        downloads = opts.cache_path('downloads') if opts.cache_dir is not None else None
        self.detector, digest = detectors.get_detector(name, opts.device, opts.detectors, cache_dir=downloads)
        self.detector_kwargs = detector_kwargs
        self.cache_name = name
        self.cache_key = dict(detector=name, digest=digest, detector_kwargs=detector_kwargs)

    def __call__(self, images: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        with profiled('metrics/detector'):
            return self.detector(images, **self.detector_kwargs).float()

# ----------------------------------------------------------------------------
# The sharded pass.


def _round_robin(num_items: int, batch_size: int, opts: MetricOptions) -> tuple[int, list[int]]:
    num_batches = math.ceil(num_items / batch_size)
    return num_batches, list(range(opts.rank, num_batches, opts.num_gpus))


def _batch_range(b: int, num_items: int, batch_size: int) -> range:
    return range(b * batch_size, min((b + 1) * batch_size, num_items))


def run_sharded(opts: MetricOptions, stats: FeatureStats, num_items: int, my_features: Iterator[torch.Tensor],
                what: str, batch_size: int | None = None) -> FeatureStats:
    """Append the features of items [0, num_items) to `stats` in order. `my_features` yields this rank's
    batches (b = rank, rank + num_gpus, ...; `batch_size` items each) as [len(batch), D] tensors."""
    if opts.num_gpus > 1 and not distributed(opts):
        raise RuntimeError(f'metrics: num_gpus = {opts.num_gpus} but no torch.distributed process group is initialised')
    batch_size = batch_size or opts.batch_size
    num_batches, _ = _round_robin(num_items, batch_size, opts)
    start = time.time()
    next_log = start + 10
    for first in range(0, num_batches, opts.num_gpus):
        b = first + opts.rank
        feats = next(my_features) if b < num_batches else None
        if distributed(opts):
            dim = torch.tensor([0 if feats is None else feats.shape[1]], device=opts.device)
            torch.distributed.all_reduce(dim, op=torch.distributed.ReduceOp.MAX)
            padded = torch.zeros([batch_size, int(dim)], dtype=torch.float32, device=opts.device)
            if feats is not None:
                padded[:feats.shape[0]] = feats
            gathered = [torch.empty_like(padded) for _ in range(opts.num_gpus)]
            torch.distributed.all_gather(gathered, padded)
            for q, part in enumerate(gathered):
                if first + q < num_batches:
                    stats.append(part[:len(_batch_range(first + q, num_items, batch_size))])
        else:
            stats.append(feats)
        if opts.verbose and opts.rank == 0 and (time.time() >= next_log or first + opts.num_gpus >= num_batches):
            opts.log(f'{what}: {stats.num_items}/{num_items} items, {dnnlib.format_time(time.time() - start)}')
            next_log = time.time() + 10
    return stats


def map_sharded(opts: MetricOptions, num_items: int, batch_size: int, fn: Callable[[range], torch.Tensor],
                what: str = 'rows') -> np.ndarray:
    """[fn(batch) for every batch of items [0, num_items)] concatenated [num_items, D] on every rank,
    each batch computed by one rank."""
    _, mine = _round_robin(num_items, batch_size, opts)
    parts = (fn(_batch_range(b, num_items, batch_size)) for b in mine)
    stats = FeatureStats(capture_all=True, max_items=num_items)
    return run_sharded(opts, stats, num_items, parts, what=what, batch_size=batch_size).get_all()


def _stats_kwargs(stats: FeatureStats) -> dict:
    return dict(capture_all=stats.capture_all, capture_mean_cov=stats.capture_mean_cov,
                max_items=stats.max_items, store_dtype=stats.store_dtype)


def real_items(dataset, max_items: int | None, subset_seed: int | None) -> np.ndarray:
    """Dataset indices to use: the first `max_items` (upstream) or, with subset_seed, a seeded random subset."""
    n = len(dataset)
    if max_items is None or max_items >= n:
        return np.arange(n)
    if subset_seed is None:
        return np.arange(max_items)
    return np.sort(np.random.default_rng(seed_of(subset_seed, 7)).choice(n, max_items, replace=False))


def compute_feature_stats_for_dataset(opts: MetricOptions, extractor: Callable, max_items: int | None = None,
                                      subset_seed: int | None = None, **stats_kwargs) -> FeatureStats:
    """Features of the real images (the first max_items, or a seeded random subset), cached on disk."""
    dataset = dnnlib.construct_class_by_name(**opts.dataset_kwargs)
    items = real_items(dataset, max_items, subset_seed)
    stats = FeatureStats(max_items=len(items), **stats_kwargs)

    cache_file = None
    if opts.cache:
        key = dict(dataset_kwargs=dict(opts.dataset_kwargs), extractor=extractor.cache_key,
                   stats_kwargs=_stats_kwargs(stats), max_items=max_items, subset_seed=subset_seed)
        md5 = hashlib.md5(repr(sorted(key.items())).encode('utf-8')).hexdigest()
        cache_file = opts.cache_path('gan-metrics', f'{dataset.name}-{extractor.cache_name}-{md5}.npz')
        if broadcast_object(opts, os.path.isfile(cache_file) if opts.rank == 0 else None):
            opts.log(f'Loading real statistics from {cache_file}')
            return FeatureStats.load(cache_file)

    opts.log(f'Computing real statistics of {dataset.name} ({len(items)} items)...')
    _, mine = _round_robin(len(items), opts.batch_size, opts)
    batches = [items[list(_batch_range(b, len(items), opts.batch_size))].tolist() for b in mine]
    loader_kwargs = dict(num_workers=opts.num_workers, pin_memory=opts.device.type == 'cuda')
    if opts.num_workers > 0:
        loader_kwargs.update(prefetch_factor=2, persistent_workers=False)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, **loader_kwargs)

    def features():
        for batch, (images, _labels) in zip(mine, loader):
            with torch.no_grad():
                feats = extractor(images.to(opts.device), items[list(_batch_range(batch, len(items), opts.batch_size))])
            yield feats

    run_sharded(opts, stats, len(items), features(), what='reals')
    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats

# ----------------------------------------------------------------------------
# Generated images.


def generator_inputs(opts: MetricOptions, items: Sequence[int], labels: np.ndarray | None,
                     z_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(z [N, z_dim], c [N, c_dim]) of generated items: each item's own seeded stream (seed, 1, i)
    draws z ~ N(0, I) and then the index of a dataset label, with replacement (as upstream)."""
    zs, cs = [], []
    for i in items:
        rng = np.random.default_rng(seed_of(opts.seed, 1, int(i)))
        zs.append(rng.standard_normal(z_dim))
        if labels is not None:
            cs.append(labels[rng.integers(len(labels))])
    c = np.stack(cs) if labels is not None else np.zeros([len(zs), 0])
    return np.stack(zs).astype(np.float32), c.astype(np.float32)


def dataset_labels(opts: MetricOptions, c_dim: int) -> np.ndarray | None:
    """All labels of the dataset [N, c_dim], drawn from by generator_inputs (None for c_dim = 0)."""
    if c_dim == 0:
        return None
    dataset = dnnlib.construct_class_by_name(**opts.dataset_kwargs)
    labels = np.stack([dataset.get_label(i) for i in range(len(dataset))]).astype(np.float32)
    if labels.ndim != 2 or labels.shape[1] != c_dim:
        raise ValueError(f'dataset {dataset.name}: labels have shape {list(labels.shape)}, the generator needs '
                         f'c_dim = {c_dim} (is use_labels set?)')
    return labels


def generate_images(opts: MetricOptions, G: torch.nn.Module, items: range, labels: np.ndarray | None) -> torch.Tensor:
    """uint8 images [N, C, H, W] of generated items (a batch_gen-aligned range), on the device."""
    z, c = generator_inputs(opts, items, labels, G.z_dim)
    z, c = torch.from_numpy(z).to(opts.device), torch.from_numpy(c).to(opts.device)
    images = []
    fork_devices = [opts.device.index or 0] if opts.device.type == 'cuda' else []
    for k in range(0, len(items), opts.batch_gen):
        with torch.random.fork_rng(devices=fork_devices), profiled('metrics/generator'):
            torch.manual_seed(seed_of(opts.seed, 2, items[k]))
            img = G(z[k:k + opts.batch_gen], c[k:k + opts.batch_gen], **opts.G_kwargs)['image']
        images.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))
    return torch.cat(images)


def compute_feature_stats_for_generator(opts: MetricOptions, extractor: Callable, num_items: int,
                                        **stats_kwargs) -> FeatureStats:
    """Features of `num_items` generated images, camera labels drawn from the dataset."""
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    labels = dataset_labels(opts, G.c_dim)
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    _, mine = _round_robin(num_items, opts.batch_size, opts)

    def features():
        for b in mine:
            items = _batch_range(b, num_items, opts.batch_size)
            with torch.no_grad():
                feats = extractor(generate_images(opts, G, items, labels), np.asarray(items))
            yield feats

    return run_sharded(opts, stats, num_items, features(), what='generated')
