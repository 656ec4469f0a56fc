"""Sliced Wasserstein distance on Laplacian pyramids (Karras et al. 2018, "Progressive Growing of GANs",
Sec. 5 and Appendix D), which needs no pretrained network.

Each image's Laplacian pyramid runs from its full resolution down to 16x16 (the last level is the
16x16 low-pass image). From every level of every image, `descriptors_per_level` 7x7 neighbourhoods
(7 * 7 * C numbers) are taken at random positions. Per level and per set, descriptors are normalised
by the mean and standard deviation of each colour channel; then the sliced Wasserstein distance
between the real and the generated descriptors is the mean absolute difference of their sorted
projections on `num_dirs * num_repeats` random unit directions (Rabin et al. 2011). Values are
reported x1e3, per level and averaged, as in the paper's tables.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from metrics import metric_utils

# ----------------------------------------------------------------------------


# Burt and Adelson's pyramid with the binomial filter (1, 4, 6, 4, 1) / 16, applied separably, and
# reflected borders (the sample at the edge is not repeated: x[-1] = x[1]).


def _down_1d(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Filter along `dim` and keep the even samples: out[j] = sum_t k[t] x[2j + t - 2]."""
    n = x.shape[dim]
    if n % 2 or n < 4:
        raise ValueError(f'swd: pyramid levels need an even size >= 4 along each axis, got {n}')
    x = torch.cat([x.narrow(dim, 2, 1), x.narrow(dim, 1, 1), x, x.narrow(dim, n - 2, 1)], dim=dim)  # Reflect 2 | 1.
    tap = lambda t: x.narrow(dim, t, n - 1).unfold(dim, 1, 2).squeeze(-1)  # x[2j + t - 2], j < n / 2.
    return (tap(0) + tap(4) + 4 * (tap(1) + tap(3)) + 6 * tap(2)) / 16


def _up_1d(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-insertion upsampling along `dim` filtered by 2 k, in polyphase form: even outputs
    (x[j-1] + 6 x[j] + x[j+1]) / 8, odd outputs (x[j] + x[j+1]) / 2, with the zero-inserted signal's
    reflected borders (x[-1] = x[1], x[n] = x[n-1])."""
    n = x.shape[dim]
    p = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    even = (p.narrow(dim, 0, n) + 6 * p.narrow(dim, 1, n) + p.narrow(dim, 2, n)) / 8
    odd = (p.narrow(dim, 1, n) + p.narrow(dim, 2, n)) / 2
    return torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial filter and keep every other pixel: [N, C, H, W] -> [N, C, H/2, W/2]."""
    return _down_1d(_down_1d(x, 3), 2)


def pyramid_up(x: torch.Tensor) -> torch.Tensor:
    """Insert zeros between pixels and interpolate with 4x the 5x5 binomial filter: [N, C, 2H, 2W]."""
    return _up_1d(_up_1d(x, 3), 2)


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[band-pass at full resolution, ..., band-pass at 2x the last, low-pass at the last resolution]."""
    levels = []
    for _ in range(num_levels - 1):
        down = pyramid_down(x)
        levels.append(x - pyramid_up(down))
        x = down
    levels.append(x)
    return levels


def pyramid_resolutions(resolution: int, min_resolution: int = 16) -> list[int]:
    """Level resolutions, full first: 128 -> [128, 64, 32, 16]."""
    ratio = resolution // min_resolution
    if resolution < min_resolution or resolution % min_resolution or not math.log2(ratio).is_integer():
        raise ValueError(f'swd: image resolution {resolution} must be {min_resolution} times a power of two')
    return [resolution >> k for k in range(int(math.log2(resolution // min_resolution)) + 1)]

# ----------------------------------------------------------------------------


class LaplacianDescriptors:
    """Feature extractor for metric_utils: uint8 images [N, C, R, R] -> the random 7x7 descriptors of every
    pyramid level, flattened [N, levels * descriptors_per_level * C * 49]; positions seeded per item."""

    def __init__(self,
        resolution:            int,        # Image resolution R (16 times a power of two).
        channels:              int = 3,    # Image channels C.
        seed:                  int = 0,    # Seed of the descriptor positions (with the item index).
        descriptors_per_level: int = 128,  # Descriptors per image and level (PGGAN: 128).
        patch_size:            int = 7,    # Neighbourhood size (PGGAN: 7).
    ):
        self.resolutions = pyramid_resolutions(resolution)
        self.channels = channels
        self.seed = seed
        self.per_level = descriptors_per_level
        self.patch = patch_size
        self.cache_name = 'swd'
        self.cache_key = dict(kind='laplacian-descriptors-v1', resolution=resolution, channels=channels, seed=seed,
                              per_level=descriptors_per_level, patch=patch_size)

    @property
    def level_dim(self) -> int:
        return self.per_level * self.channels * self.patch ** 2

    def positions(self, indices: np.ndarray) -> np.ndarray:
        """Top-left corners [N, levels, per_level, 2] of each item's descriptors, from (seed, 4, item)."""
        out = np.zeros([len(indices), len(self.resolutions), self.per_level, 2], dtype=np.int64)
        for j, i in enumerate(indices):
            rng = np.random.default_rng(metric_utils.seed_of(self.seed, 4, int(i)))
            for l, res in enumerate(self.resolutions):
                out[j, l] = rng.integers(0, res - self.patch + 1, size=[self.per_level, 2])
        return out

    def __call__(self, images: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        n, c, h, w = images.shape
        if c != self.channels or h != self.resolutions[0] or w != self.resolutions[0]:
            res = self.resolutions[0]
            raise ValueError(f'swd: expected images [N, {self.channels}, {res}, {res}], got {list(images.shape)}')
        levels = laplacian_pyramid(images.float(), len(self.resolutions))
        pos = torch.from_numpy(self.positions(indices)).to(images.device)
        offsets = torch.arange(self.patch, device=images.device)
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        out = []
        for l, level in enumerate(levels):
            ys = pos[:, l, :, 0, None, None] + offsets[:, None]    # [N, per_level, patch, 1]
            xs = pos[:, l, :, 1, None, None] + offsets[None, :]    # [N, per_level, 1, patch]
            patches = level[batch, :, ys, xs]                       # [N, per_level, patch, patch, C]
            out.append(patches.permute(0, 1, 4, 2, 3).reshape(n, -1))
        return torch.cat(out, dim=1)

    def split_levels(self, features: np.ndarray) -> list[np.ndarray]:
        """[N, levels * level_dim] -> per level [N * per_level, C, patch, patch]."""
        d = self.level_dim
        return [features[:, l * d:(l + 1) * d].reshape(-1, self.channels, self.patch, self.patch)
                for l in range(len(self.resolutions))]

# ----------------------------------------------------------------------------


def normalize_descriptors(desc: np.ndarray) -> np.ndarray:
    """Per colour channel zero mean, unit standard deviation over all descriptors of a set [M, C, p, p]
    -> [M, C * p * p] float32 (moments in float64)."""
    desc = np.asarray(desc, np.float32)
    mean = desc.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    out = desc - mean
    std = np.sqrt(np.square(out).mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)).astype(np.float32)
    out /= np.maximum(std, 1e-8)
    return out.reshape(len(out), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_dirs: int = 128, num_repeats: int = 4,
                       seed: int = 0) -> float:
    """Mean over random unit directions u of mean_i |sort(a u)_i - sort(b u)_i| for equal-size sets [M, D]
    (NumPy on the CPU: its vectorised sort is several times faster than torch's here)."""
    if a.shape != b.shape:
        raise ValueError(f'swd: the two descriptor sets must have equal shapes, got {list(a.shape)} and '
                         f'{list(b.shape)}')
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_repeats):
        dirs = rng.standard_normal([num_dirs, a.shape[1]]).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        pa = dirs @ a.T
        pb = dirs @ b.T
        pa.sort(axis=1)
        pb.sort(axis=1)
        pa -= pb
        total += float(np.abs(pa, out=pa).mean(axis=1).mean())
    return total / num_repeats


def swd_from_features(extractor: LaplacianDescriptors, real: np.ndarray, gen: np.ndarray, seed: int = 0,
                      num_dirs: int = 128, num_repeats: int = 4) -> dict[int, float]:
    """{level resolution: SWD x1e3} between descriptor features of equal-size real and generated sets."""
    if real.shape != gen.shape:
        raise ValueError(f'swd: real and generated sets differ in size: {list(real.shape)} vs {list(gen.shape)}')
    out = {}
    for l, (r, g) in enumerate(zip(extractor.split_levels(real), extractor.split_levels(gen))):
        a, b = normalize_descriptors(r), normalize_descriptors(g)
        out[extractor.resolutions[l]] = 1e3 * sliced_wasserstein(a, b, num_dirs, num_repeats,
                                                                 seed=metric_utils.seed_of(seed, 5, l))
    return out


_STATS = dict(capture_all=True, store_dtype='float16')


def _real_descriptors(opts: metric_utils.MetricOptions, num_images: int):
    """(dataset, num, real descriptor, generated descriptor, real features) for compute_swd and its
    mean-image baseline: the descriptors of a seeded random subset of min(num_images, len) reals."""
    import dnnlib
    dataset = dnnlib.construct_class_by_name(**opts.dataset_kwargs)
    num = min(num_images, len(dataset))
    shape = dict(resolution=dataset.resolution, channels=dataset.image_shape[0])
    real_desc = LaplacianDescriptors(seed=metric_utils.seed_of(opts.seed, 0), **shape)
    gen_desc = LaplacianDescriptors(seed=metric_utils.seed_of(opts.seed, 1), **shape)
    real = metric_utils.compute_feature_stats_for_dataset(opts, real_desc, max_items=num, subset_seed=opts.seed,
                                                          **_STATS)
    return dataset, num, real_desc, gen_desc, real


def compute_swd(opts: metric_utils.MetricOptions, num_images: int) -> tuple[dict[int, float], float]:
    """({resolution: SWD x1e3}, average) between a seeded random subset of `num_images` reals and as
    many generated images; valid on rank 0 (NaN elsewhere)."""
    dataset, num, real_desc, gen_desc, real = _real_descriptors(opts, num_images)
    if dataset.resolution != opts.G.img_resolution:
        raise ValueError(f'swd: dataset {dataset.name} has resolution {dataset.resolution}, the generator '
                         f'{opts.G.img_resolution}; they must match')
    gen = metric_utils.compute_feature_stats_for_generator(opts, gen_desc, num, **_STATS)
    if opts.rank != 0:
        return {res: float('nan') for res in real_desc.resolutions}, float('nan')
    per_level = swd_from_features(real_desc, real.get_all(), gen.get_all(), seed=opts.seed)
    return per_level, float(np.mean(list(per_level.values())))


def compute_swd_mean_image(opts: metric_utils.MetricOptions, num_images: int) -> tuple[dict[int, float], float]:
    """The baseline of compute_swd: ({resolution: SWD x1e3}, average) between the same real subset and as
    many copies of its mean image (rounded to uint8), descriptors taken where compute_swd takes the
    generated ones. A generator that learned only the average colour layout scores about this."""
    dataset, num, real_desc, gen_desc, real = _real_descriptors(opts, num_images)
    if opts.rank != 0:
        return {res: float('nan') for res in real_desc.resolutions}, float('nan')
    items = metric_utils.real_items(dataset, num, opts.seed)
    mean = np.mean([dataset[int(i)][0] for i in items], axis=0, dtype=np.float64)
    mean = torch.from_numpy(np.rint(mean).astype(np.uint8)).to(opts.device)
    gen = metric_utils.FeatureStats(max_items=num, **_STATS)
    for start in range(0, num, opts.batch_size):
        indices = np.arange(start, min(start + opts.batch_size, num))
        gen.append(gen_desc(mean[None].expand(len(indices), -1, -1, -1), indices))
    per_level = swd_from_features(real_desc, real.get_all(), gen.get_all(), seed=opts.seed)
    return per_level, float(np.mean(list(per_level.values())))
