"""Latent-interpolation videos on an orbiting camera (gen_videos.py), as upstream's gen_videos:

- keyframes: one latent per grid cell and keyframe; the W path is a periodic cubic spline through
  them (scipy interp1d over the keyframes tiled twice on each side), w_frames frames per keyframe;
  with a single keyframe the path is that keyframe's W, exactly;
- camera: yaw 3.14/2 + 0.35 sin(2 3.14 t), pitch 3.14/2 - 0.05 + 0.25 cos(2 3.14 t), t = frame / frames,
  on the generator's orbit (avg_camera_radius, aimed at avg_camera_pivot); one orbit per video; the
  conditioning camera is frontal; focal 4.2647 (FFHQ, AFHQ) or 1.7074 (Shapenet). Upstream's 3.14
  constants are kept so that frames match its videos.
- plane caching: a cell whose W did not change since its last frame reuses its tri-planes, so frames
  that change only the camera skip the backbone.

Image modes: image, image_raw (neural resolution), image_depth (negated, min-max scaled per cell and
frame, near is bright), and ours: image_near / image_far, the final image from a camera dollied
toward / away from the look-at pivot (distance x0.5 / x2) with the focal length scaled by the same
factor, so that the subject keeps its size while the perspective gets stronger / flatter (a dolly
zoom). Numeric ray bounds move with the camera; 'auto' bounds need no change.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import numpy as np
import scipy.interpolate
import torch

from camera_utils import LookAtPoseSampler
from training import inference
from training.image_grid import depth_to_image

IMAGE_MODES = ('image', 'image_near', 'image_far', 'image_depth', 'image_raw')
CFG_FOCAL = {'FFHQ': 4.2647, 'AFHQ': 4.2647, 'Shapenet': 1.7074}   # Normalised focal lengths of upstream's videos.
DOLLY = {'image_near': 0.5, 'image_far': 2.0}                       # Camera-to-pivot distance factors.
PI = 3.14                                                           # Upstream's constant in the camera path.


class VideoOptionsError(ValueError):
    """Seeds, grid and keyframes that do not fit together."""

# ----------------------------------------------------------------------------
# Keyframes and paths.


def keyframe_seeds(seeds: list[int], grid: tuple[int, int], num_keyframes: int | None = None,
                   shuffle_seed: int | None = None) -> np.ndarray:
    """Seeds [grid_h, grid_w, K]: seeds repeated to fill K keyframes x grid cells (K default
    len(seeds) / cells, which must divide), optionally shuffled, as upstream."""
    grid_w, grid_h = grid
    cells = grid_w * grid_h
    if num_keyframes is None:
        if len(seeds) % cells != 0:
            raise VideoOptionsError(f'{len(seeds)} seeds do not divide into a {grid_w}x{grid_h} grid; give a multiple '
                             f'of {cells} seeds or --num-keyframes')
        num_keyframes = len(seeds) // cells
    if num_keyframes < 1:
        raise VideoOptionsError(f'--num-keyframes must be >= 1, got {num_keyframes}')
    all_seeds = np.array([seeds[i % len(seeds)] for i in range(num_keyframes * cells)], dtype=np.int64)
    if shuffle_seed is not None:
        np.random.RandomState(seed=shuffle_seed).shuffle(all_seeds)
    return all_seeds.reshape(grid_h, grid_w, num_keyframes)


class LatentPath:
    """W at frame f for one grid cell: a periodic cubic spline through the keyframes' W
    (upstream's interp1d over keyframes tiled `wraps` times on each side); constant for one keyframe."""

    def __init__(self, ws: torch.Tensor, w_frames: int, wraps: int = 2):
        self.ws, self.w_frames = ws, int(w_frames)                       # ws [K, num_ws, w_dim]
        k = ws.shape[0]
        self.interp = None
        if k > 1:
            x = np.arange(-k * wraps, k * (wraps + 1))
            y = np.tile(ws.cpu().numpy(), [wraps * 2 + 1, 1, 1])
            self.interp = scipy.interpolate.interp1d(x, y, kind='cubic', axis=0)

    def __call__(self, frame: int) -> torch.Tensor:
        if self.interp is None:
            return self.ws[0:1]
        w = self.interp(frame / self.w_frames)
        return torch.from_numpy(w).to(device=self.ws.device, dtype=self.ws.dtype).unsqueeze(0)


def camera_angles(frame: int, num_frames: int) -> tuple[float, float]:
    """(yaw h, pitch v) of frame `frame` of `num_frames`: one orbit per video, upstream's constants."""
    t = 2 * PI * frame / num_frames
    return PI / 2 + 0.35 * np.sin(t), PI / 2 - 0.05 + 0.25 * np.cos(t)


def camera_label(G, h: float, v: float, focal: float, device: torch.device) -> torch.Tensor:
    """[1, 25] on G's orbit, principal point (0.5, 0.5)."""
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    pose = LookAtPoseSampler.sample(h, v, inference.camera_pivot(G), radius=inference.camera_radius(G))
    return torch.cat([pose.reshape(1, 16), intrinsics.reshape(1, 9)], dim=1).to(device)


def dolly(c: torch.Tensor, pivot: torch.Tensor, factor: float) -> tuple[torch.Tensor, float]:
    """Camera [N, 25] moved along its line to `pivot` to factor x its distance, focal x factor.
    Returns (new camera, change of camera-to-pivot distance), for the ray bounds."""
    c = c.clone()
    pose = c[:, :16].view(-1, 4, 4)
    pivot = pivot.to(c)
    offset = pose[:, :3, 3] - pivot
    pose[:, :3, 3] = pivot + factor * offset
    c[:, 16] *= factor      # fx
    c[:, 20] *= factor      # fy
    return c, float((factor - 1) * offset.norm(dim=-1).mean())


@contextlib.contextmanager
def shifted_ray_bounds(G, shift: float):
    """Inside the block, numeric ray_start / ray_end of G are moved by `shift` ('auto' untouched)."""
    kwargs = G.rendering_kwargs
    saved = kwargs['ray_start'], kwargs['ray_end']
    if shift and saved[0] != 'auto':
        kwargs['ray_start'], kwargs['ray_end'] = saved[0] + shift, saved[1] + shift
    try:
        yield
    finally:
        kwargs['ray_start'], kwargs['ray_end'] = saved

# ----------------------------------------------------------------------------
# Frames.


class FrameRenderer:
    """Renders one grid cell's image for (W, camera), reusing that cell's tri-planes while its W is
    unchanged. `backbone_passes` counts the planes computed."""

    def __init__(self, G, image_mode: str = 'image'):
        if image_mode not in IMAGE_MODES:
            raise ValueError(f'image_mode must be one of {IMAGE_MODES}, got {image_mode!r}')
        self.G, self.image_mode = G, image_mode
        self.cache = {}                 # cell -> (ws, planes)
        self.backbone_passes = 0

    @torch.no_grad()
    def __call__(self, cell, ws: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """-> (image [C, H, W] in [-1, 1], whether the backbone ran)."""
        G, mode = self.G, self.image_mode
        cached = self.cache.get(cell)
        hit = cached is not None and torch.equal(cached[0], ws)
        shift = 0.0
        if mode in DOLLY:
            c, shift = dolly(c, inference.camera_pivot(G), DOLLY[mode])
        G._last_planes = cached[1] if hit else None
        with shifted_ray_bounds(G, shift):
            out = G.synthesis(ws, c, noise_mode='const', cache_backbone=not hit, use_cached_backbone=hit)
        if not hit:
            self.cache[cell] = (ws, G._last_planes)
            self.backbone_passes += 1
        G._last_planes = None
        key = 'image' if mode in DOLLY else mode
        img = out[key][0]
        if mode == 'image_depth':
            img = depth_to_image(img)
        return img, not hit


def layout_grid(images: list[torch.Tensor], grid: tuple[int, int]) -> np.ndarray:
    """Row-major cells [C, H, W] in [-1, 1] -> uint8 frame [H * grid_h, W * grid_w, 3]."""
    grid_w, grid_h = grid
    rows = [torch.cat(images[r * grid_w:(r + 1) * grid_w], dim=2) for r in range(grid_h)]
    frame = inference.to_uint8(torch.cat(rows, dim=1))
    return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame


@contextlib.contextmanager
def mp4_writer(path: str, fps: int = 60, bitrate: str = '10M'):
    """An imageio (ffmpeg, libx264) writer to a temporary .mp4 beside `path`, renamed onto it on success."""
    import imageio
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp.mp4')
    writer = imageio.get_writer(tmp, mode='I', fps=fps, codec='libx264', bitrate=bitrate)
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
