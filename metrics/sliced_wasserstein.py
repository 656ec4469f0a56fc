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
import torch.nn.functional as F

from metrics import metric_utils

# ----------------------------------------------------------------------------


def _binomial_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 5x5 binomial filter (1, 4, 6, 4, 1)^2 / 256 of Burt and Adelson's pyramid, one per channel."""
    k = torch.tensor([1., 4., 6., 4., 1.], dtype=dtype, device=device)
    k = torch.outer(k, k) / 256
    return k.expand(channels, 1, 5, 5).contiguous()


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the binomial filter (reflected borders) and keep every other pixel: [N, C, H/2, W/2]."""
    k = _binomial_kernel(x.shape[1], x.dtype, x.device)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode='reflect'), k, stride=2, groups=x.shape[1])


def pyramid_up(x: torch.Tensor) -> torch.Tensor:
    """Insert zeros between pixels and interpolate with 4x the binomial filter: [N, C, 2H, 2W]."""
    n, c, h, w = x.shape
    y = torch.zeros([n, c, 2 * h, 2 * w], dtype=x.dtype, device=x.device)
    y[:, :, ::2, ::2] = x * 4
    return F.conv2d(F.pad(y, [2, 2, 2, 2], mode='reflect'), _binomial_kernel(c, x.dtype, x.device), groups=c)


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
    if resolution < min_resolution or resolution % min_resolution or not math.log2(resolution // min_resolution).is_integer():
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
            raise ValueError(f'swd: expected images [N, {self.channels}, {self.resolutions[0]}, {self.resolutions[0]}], '
                             f'got {list(images.shape)}')
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


def normalize_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """Per colour channel zero mean, unit standard deviation over all descriptors of a set [M, C, p, p]."""
    desc = desc.double()
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return ((desc - mean) / std.clamp(min=1e-8)).float().flatten(1)


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted; on the CPU through NumPy, whose vectorised sort is several times faster here."""
    if x.device.type == 'cpu':
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return x.sort(dim=1).values


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_dirs: int = 128, num_repeats: int = 4,
                       seed: int = 0) -> float:
    """Mean over random unit directions u of mean_i |sort(a u)_i - sort(b u)_i| for equal-size sets [M, D]."""
    if a.shape != b.shape:
        raise ValueError(f'swd: the two descriptor sets must have equal shapes, got {list(a.shape)} and {list(b.shape)}')
    gen = torch.Generator(device='cpu').manual_seed(seed)
    total = 0.0
    for _ in range(num_repeats):
        dirs = torch.randn([num_dirs, a.shape[1]], generator=gen).to(a.device)
        dirs /= dirs.norm(dim=1, keepdim=True)
        pa = _sorted_rows(dirs @ a.T)
        pb = _sorted_rows(dirs @ b.T)
        total += float((pa - pb).abs().mean(dtype=torch.float64))
    return total / num_repeats


def swd_from_features(extractor: LaplacianDescriptors, real: np.ndarray, gen: np.ndarray, seed: int = 0,
                      num_dirs: int = 128, num_repeats: int = 4) -> dict[int, float]:
    """{level resolution: SWD x1e3} between descriptor features of equal-size real and generated sets."""
    if real.shape != gen.shape:
        raise ValueError(f'swd: real and generated sets differ in size: {list(real.shape)} vs {list(gen.shape)}')
    out = {}
    for l, (r, g) in enumerate(zip(extractor.split_levels(real), extractor.split_levels(gen))):
        a = normalize_descriptors(torch.from_numpy(np.asarray(r)))
        b = normalize_descriptors(torch.from_numpy(np.asarray(g)))
        out[extractor.resolutions[l]] = 1e3 * sliced_wasserstein(a, b, num_dirs, num_repeats,
                                                                 seed=metric_utils.seed_of(seed, 5, l))
    return out


def compute_swd(opts: metric_utils.MetricOptions, num_images: int) -> tuple[dict[int, float], float]:
    """({resolution: SWD x1e3}, average) between a seeded random subset of `num_images` reals and as
    many generated images; valid on rank 0 (NaN elsewhere)."""
    import dnnlib
    dataset = dnnlib.construct_class_by_name(**opts.dataset_kwargs)
    if dataset.resolution != opts.G.img_resolution:
        raise ValueError(f'swd: dataset {dataset.name} has resolution {dataset.resolution}, the generator '
                         f'{opts.G.img_resolution}; they must match')
    num = min(num_images, len(dataset))
    shape = dict(resolution=dataset.resolution, channels=dataset.image_shape[0])
    real_desc = LaplacianDescriptors(seed=metric_utils.seed_of(opts.seed, 0), **shape)
    gen_desc = LaplacianDescriptors(seed=metric_utils.seed_of(opts.seed, 1), **shape)
    stats = dict(capture_all=True, store_dtype='float16')
    real = metric_utils.compute_feature_stats_for_dataset(opts, real_desc, max_items=num, subset_seed=opts.seed, **stats)
    gen = metric_utils.compute_feature_stats_for_generator(opts, gen_desc, num, **stats)
    if opts.rank != 0:
        return {res: float('nan') for res in real_desc.resolutions}, float('nan')
    per_level = swd_from_features(real_desc, real.get_all(), gen.get_all(), seed=opts.seed)
    return per_level, float(np.mean(list(per_level.values())))
