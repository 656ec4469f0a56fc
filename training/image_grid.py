"""Image grids for the training loop's reals.png / fakesNNNNNN.png snapshots."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from dnnlib.util import atomic_write_path


def grid_shape(resolution: int, grid_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(columns, rows): upstream's clip(7680 // W, 7, 32) x clip(4320 // H, 4, 32) unless given."""
    if grid_size is not None:
        return int(grid_size[0]), int(grid_size[1])
    return int(np.clip(7680 // resolution, 7, 32)), int(np.clip(4320 // resolution, 4, 32))


def setup_snapshot_image_grid(training_set, random_seed: int = 0, grid_size=None):
    """Pick the dataset items shown in the grids: a seeded random selection (camera labels are continuous,
    so upstream's grouping by identical label would only repeat single images along each row).

    Returns ((columns, rows), images uint8 [N, C, H, W], labels float32 [N, label_dim]).
    """
    gw, gh = grid_shape(training_set.resolution, grid_size)
    rnd = np.random.RandomState(random_seed)
    order = rnd.permutation(len(training_set))
    indices = [int(order[i % len(order)]) for i in range(gw * gh)]
    images, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def save_image_grid(img, fname: str, drange, grid_size) -> None:
    """Tile img [N, C, H, W] (values in drange) into a grid_size = (columns, rows) PNG, written atomically."""
    img = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    lo, hi = drange
    img = (img.astype(np.float32) - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    n, c, h, w = img.shape
    if n != gw * gh:
        raise ValueError(f'save_image_grid: {n} images do not fill a {gw}x{gh} grid')
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    mode = {1: 'L', 3: 'RGB'}.get(c)
    if mode is None:
        raise ValueError(f'save_image_grid: cannot write {c}-channel images')
    with atomic_write_path(fname) as tmp:
        PIL.Image.fromarray(img[:, :, 0] if c == 1 else img, mode).save(tmp, format='PNG')


def depth_to_image(depth: torch.Tensor) -> torch.Tensor:
    """Negated depth, min-max scaled over the whole batch to [-1, 1] (near is bright), as upstream."""
    d = -depth
    return (d - d.min()) / (d.max() - d.min()).clamp(min=1e-8) * 2 - 1
