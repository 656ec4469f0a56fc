"""What the generation commands (gen_samples.py, gen_videos.py) share: loading G_ema from any
snapshot kind, the device, seed lists, cameras on the orbit, and converting outputs to pixels.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import PIL.Image
import torch

import dnnlib
import legacy
from camera_utils import LookAtPoseSampler
from torch_utils.safe_pickle import UnsafePickleError
from torch_utils.snapshot import SnapshotError

# Errors that mean "this --network cannot be used"; the commands print them in one line.
NETWORK_ERRORS = (SnapshotError, UnsafePickleError, FileNotFoundError, IsADirectoryError, dnnlib.util.OfflineError)


def default_device() -> torch.device:
    """CUDA when available, else the CPU (upstream's scripts require CUDA)."""
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def load_generator(network: str, device: torch.device) -> torch.nn.Module:
    """G_ema of a network snapshot (ours), a training state (training-state-*.pt) or an official
    EG3D pickle, path or URL, through legacy.load_network_pkl (no code from the file runs). The
    network is always rebuilt from this checkout's classes, which is what upstream's
    --reload_modules did."""
    with dnnlib.util.open_url(network) as f:
        G = legacy.load_network_pkl(f)['G_ema']
    if not hasattr(G, 'rendering_kwargs'):
        raise SnapshotError(f'{network}: G_ema is a {type(G).__name__}, not a tri-plane generator')
    return G.to(device).eval().requires_grad_(False)


def load_generator_or_exit(network: str, command: str) -> tuple[torch.nn.Module, torch.device]:
    """(G_ema, device) for a generation command: prints what it loads, and on a network that cannot
    be used prints one line naming the file and the problem, then exits with status 1."""
    device = default_device()
    print(f'Loading networks from "{network}" ({device}) ...')
    try:
        return load_generator(network, device), device
    except NETWORK_ERRORS as err:
        print(f'{command}: {err}', file=sys.stderr)
        raise SystemExit(1)


def parse_range(s: str | list) -> list[int]:
    """'1,2,5-10' -> [1, 2, 5, 6, 7, 8, 9, 10] (inclusive ranges, as upstream)."""
    if isinstance(s, list):
        return s
    out = []
    for part in s.split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'empty range {part!r}')
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            out.append(int(part))
        else:
            raise ValueError(f'{part!r} is not a number or a range a-b')
    return out


def parse_vec2(s: str | tuple) -> tuple[int, int]:
    """'4x2' or '4,2' -> (4, 2)."""
    if isinstance(s, tuple):
        return s
    parts = re.split(r'[x,]', s)
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f'{s!r} is not of the form WxH or W,H')
    return int(parts[0]), int(parts[1])


def latent(seed: int, z_dim: int, device: torch.device) -> torch.Tensor:
    """z [1, z_dim] = RandomState(seed).randn, as upstream (float64 there; the mapping casts it)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(device=device, dtype=torch.float32)


def camera_pivot(G) -> torch.Tensor:
    return torch.tensor(G.rendering_kwargs.get('avg_camera_pivot', [0, 0, 0]), dtype=torch.float32)


def camera_radius(G) -> float:
    return float(G.rendering_kwargs.get('avg_camera_radius', 2.7))


def orbit_camera(G, h: float, v: float, intrinsics: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Camera label [1, 25] on G's orbit (radius avg_camera_radius, aimed at avg_camera_pivot)."""
    pose = LookAtPoseSampler.sample(h, v, camera_pivot(G), radius=camera_radius(G))
    return torch.cat([pose.reshape(1, 16), intrinsics.reshape(1, 9).to(pose)], dim=1).to(device)

# ----------------------------------------------------------------------------


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> uint8 [H, W, C] via (x * 127.5 + 128) clamped, as upstream."""
    return (img.permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def save_png(path: str, pixels: np.ndarray) -> None:
    """uint8 [H, W, 3] or [H, W, 1] -> PNG, written to a temporary name then renamed."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    with dnnlib.util.atomic_write_path(path) as tmp:
        PIL.Image.fromarray(pixels).save(tmp, format='PNG')
