"""Tri-plane volume rendering with importance sampling (EG3D Sec. 4; NeRF's hierarchical sampling,
Mildenhall et al. Sec. 5.2), compatible with upstream's ImportanceRenderer: the same random draws in
the same order, the same sample depths, and outputs equal up to float rounding (the final composite
sums in a different order; see composite_sample_sets).

Where upstream is undefined or breaks, we differ: a single ray keeps its batch dimension in
sample_importance, and an 'auto'-bounded batch in which no ray hits the box renders empty.

The renderer is handed its decoder: decoder(sampled_features [N, 3, P, C], directions [N, P, 3]) ->
{'rgb': [N, P, C_out], 'sigma': [N, P, 1]} with sigma the raw (unactivated) density.

rendering_options (upstream's rendering_kwargs; the generator passes its whole dict):
    ray_start, ray_end              near / far depth along unit rays, or both 'auto' (ray-box hit)
    box_warp                        side of the cube [-b/2, b/2]^3 that the planes cover
    depth_resolution                coarse (stratified) samples per ray
    depth_resolution_importance     fine (importance) samples per ray; 0 = coarse pass only
    disparity_space_sampling        stratify in 1/depth instead of depth (default False)
    clamp_mode                      density activation; only 'softplus' (default)
    white_back                      composite over white instead of black (default False)
    density_noise                   std of Gaussian noise added to raw densities (default 0)
  ours:
    plane_sampling                  'auto' (default; or $EG3D_PLANE_SAMPLING): on the CPU, decoders
                                    with forward_plane_mean get the planes' mean from one weighted
                                    gather (plane_gather.py); 'grid_sample': always upstream's three
                                    look-ups per point then the decoder's mean; 'gather': always the gather
    plane_convention                'eg3d' (default): planes (x,y), (x,z), (z,x) as upstream;
                                    'orthogonal': planes (x,y), (y,z), (z,x)
    jitter                          True (default, upstream): random stratified jitter and random
                                    importance uniforms; False: no random draws at all (coarse
                                    depths start + k delta, importance uniforms (k + 0.5) / n)

On the CPU (float32 / float64, unless EG3D_FUSED_OPS=0) host kernels (torch_utils/ops/render_ops) take
the importance sampling and, under no_grad, the plane gather, the decoder's activations and the
compositing: the same draws and formulas in fewer passes over memory (tests/test_render_ops.py).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils.ops import render_ops_fused
from training.volumetric_rendering import math_utils, plane_gather
from training.volumetric_rendering.ray_marcher import (MipRayMarcher2, composite_sample_sets,
                                                      composite_sample_sets_host, interval_weights)

PLANE_CONVENTIONS = ('eg3d', 'orthogonal')
DRAW_NAMES = ('render.stratified_u', 'render.importance_u')

# ----------------------------------------------------------------------------
# Tri-plane projection and sampling.


def generate_planes(convention: str = 'eg3d') -> torch.Tensor:
    """The three plane axis matrices [3, 3, 3]; a point p (row vector) lands on plane k at the first
    two components of p @ inverse(axes[k]).

    'eg3d' gives upstream's (x,y), (x,z), (z,x): there is no yz plane, and planes 1 and 2 see the
    same two coordinates transposed (known upstream, kept so released models load). 'orthogonal'
    gives (x,y), (y,z), (z,x).
    """
    if convention == 'eg3d':
        rows = [[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                [[0, 0, 1], [1, 0, 0], [0, 1, 0]]]
    elif convention == 'orthogonal':
        rows = [[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                [[0, 1, 0], [0, 0, 1], [1, 0, 0]],
                [[0, 0, 1], [1, 0, 0], [0, 1, 0]]]
    else:
        raise ValueError(f'plane_convention must be one of {PLANE_CONVENTIONS}, got {convention!r}')
    return torch.tensor(rows, dtype=torch.float32)


def project_onto_planes(planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Plane axes [P, 3, 3], points [N, M, 3] -> 2-D plane coordinates [N * P, M, 2] (plane-major per sample)."""
    n, m, _ = coordinates.shape
    inv_axes = torch.linalg.inv(planes.to(coordinates.dtype))
    projected = torch.einsum('nmk,pkj->npmj', coordinates, inv_axes[:, :, :2])
    return projected.reshape(n * planes.shape[0], m, 2)


def sample_from_planes(plane_axes: torch.Tensor, plane_features: torch.Tensor, coordinates: torch.Tensor,
                       mode: str = 'bilinear', padding_mode: str = 'zeros', box_warp: float | None = None) -> torch.Tensor:
    """Bilinear look-up of plane features [N, P, C, H, W] at points [N, M, 3] -> [N, P, M, C].

    Points are scaled by 2 / box_warp (None: no scaling, the planes cover [-1, 1]^3). On each plane
    the first coordinate indexes the width and the second the height; grid_sample with
    align_corners=False, so the planes' texel centres sit at (k + 0.5) / W * 2 - 1, and points
    outside the box read zeros.
    """
    n, n_planes, c, h, w = plane_features.shape
    m = coordinates.shape[1]
    if plane_axes.shape[0] != n_planes or coordinates.shape[0] != n or coordinates.shape[-1] != 3:
        raise ValueError(f'sample_from_planes: {plane_axes.shape[0]} plane axes, plane features '
                         f'{list(plane_features.shape)} and points {list(coordinates.shape)} do not fit '
                         f'(expected [N, P, C, H, W] and [N, M, 3])')
    if box_warp is not None:
        coordinates = (2 / box_warp) * coordinates
    grid = project_onto_planes(plane_axes, coordinates).unsqueeze(1)                  # [N*P, 1, M, 2]
    out = F.grid_sample(plane_features.reshape(n * n_planes, c, h, w), grid.to(plane_features.dtype),
                        mode=mode, padding_mode=padding_mode, align_corners=False)     # [N*P, C, 1, M]
    return out.reshape(n, n_planes, c, m).transpose(-1, -2)


def sample_from_3dgrid(grid: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Trilinear look-up of a feature volume [1, C, D, H, W] at points [N, M, 3] in [-1, 1]^3 -> [N, M, C]."""
    n, m, _ = coordinates.shape
    out = F.grid_sample(grid.expand(n, -1, -1, -1, -1), coordinates.reshape(n, 1, 1, m, 3).to(grid.dtype),
                        mode='bilinear', padding_mode='zeros', align_corners=False)    # [N, C, 1, 1, M]
    return out.reshape(n, grid.shape[1], m).transpose(1, 2)

# ----------------------------------------------------------------------------
# The renderer's random draws: recorded, and replayable (the official fixtures store them).


class RendererDraws:
    """Records the uniform draws the renderer makes and, for names given in `replay`, returns the
    given tensors instead of drawing (in order, one per draw). Use through `renderer_draws()`."""

    def __init__(self, replay: Mapping[str, torch.Tensor | Sequence[torch.Tensor]] | None = None):
        self.replay = {}
        for name, value in (replay or {}).items():
            if name not in DRAW_NAMES:
                raise ValueError(f'renderer_draws: unknown draw {name!r}; the renderer draws {DRAW_NAMES}')
            self.replay[name] = list(value) if isinstance(value, (list, tuple)) else [value]
        self.recorded = {name: [] for name in DRAW_NAMES}

    @staticmethod
    def from_arrays(arrays: Mapping, prefix: str) -> dict[str, list[torch.Tensor]]:
        """Collect fixture entries '<prefix>render.stratified_u#0', '#1', ... into a replay dict."""
        out = {}
        for name in DRAW_NAMES:
            k = 0
            while f'{prefix}{name}#{k}' in arrays:
                out.setdefault(name, []).append(torch.as_tensor(arrays[f'{prefix}{name}#{k}']))
                k += 1
        if not out:
            raise KeyError(f'renderer_draws: no entries named {prefix}render.*_u#k')
        return out

    def draw(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        queue = self.replay.get(name)
        if queue is None:
            u = torch.rand(list(shape), dtype=like.dtype, device=like.device)
        else:
            if not queue:
                raise RuntimeError(f'renderer_draws: the replay of {name} ran out after '
                                   f'{len(self.recorded[name])} draws')
            u = torch.as_tensor(queue.pop(0)).to(device=like.device, dtype=like.dtype)
            if list(u.shape) != list(shape):
                raise ValueError(f'renderer_draws: replayed {name} has shape {list(u.shape)}, '
                                 f'the renderer needs {list(shape)}')
        self.recorded[name].append(u)
        return u


_active = threading.local()


@contextlib.contextmanager
def renderer_draws(replay: Mapping[str, torch.Tensor | Sequence[torch.Tensor]] | None = None):
    """Inside the block, the renderer's uniforms are recorded (`.recorded[name]`, one tensor per draw)
    and those named in `replay` are taken from it instead of the global generator:

        with renderer_draws(replay=RendererDraws.from_arrays(npz, 'rand/fwd_eval/')) as draws:
            out = G.synthesis(ws, c)
    """
    stack = _active.__dict__.setdefault('stack', [])
    draws = RendererDraws(replay)
    stack.append(draws)
    try:
        yield draws
    finally:
        stack.remove(draws)


def _uniform(name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) of `shape` from the global generator (as upstream), unless a renderer_draws block is active."""
    stack = getattr(_active, 'stack', None)
    if stack:
        return stack[-1].draw(name, shape, like)
    return torch.rand(list(shape), dtype=like.dtype, device=like.device)

# ----------------------------------------------------------------------------
# Sampling along rays.


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_importance: int, det: bool = False,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-linear CDF (NeRF Sec. 5.2), as upstream does it.

    bins [R, B], weights [R, K] with K <= B - 1: the CDF rises by weight k between bins k and k + 1,
    so only bins 0..K are used (the renderer passes K = B - 2: its last bin is never sampled, an
    upstream quirk). det: quantile midpoints (k + 0.5) / n instead of uniforms.
    Returns [R, n_importance].
    """
    n_rays, k = weights.shape
    if bins.shape[0] != n_rays or bins.shape[1] < k + 1:
        raise ValueError(f'sample_pdf: bins {list(bins.shape)} do not fit weights {list(weights.shape)}')
    weights = weights + eps
    pdf = weights / torch.sum(weights, dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)        # [R, K+1]
    if det:
        u = (torch.arange(n_importance, dtype=cdf.dtype, device=cdf.device) + 0.5) / n_importance
        u = u.expand(n_rays, n_importance).contiguous()
    else:
        u = _uniform('render.importance_u', [n_rays, n_importance], cdf).contiguous()

    idx = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(idx - 1, 0)
    above = torch.clamp_max(idx, k)
    idx_pairs = torch.stack([below, above], dim=-1).reshape(n_rays, 2 * n_importance)
    cdf_g = torch.gather(cdf, 1, idx_pairs).reshape(n_rays, n_importance, 2)
    bins_g = torch.gather(bins, 1, idx_pairs).reshape(n_rays, n_importance, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def ray_bounds(ray_origins: torch.Tensor, ray_directions: torch.Tensor, rendering_options: dict):
    """(ray_start, ray_end): the options' numbers, or for 'auto' the ray/cube hits [N, M, 1].

    'auto' as upstream: rays that miss the cube get start = min of the hits' starts and end = max of
    the hits' *starts* (an upstream bug, kept: the max of the ends was meant). If no ray of the batch
    hits, every ray gets start = end = 0 and renders empty (upstream has no defined result there).
    """
    start, end = rendering_options['ray_start'], rendering_options['ray_end']
    if start != 'auto' and end != 'auto':
        return float(start), float(end)
    if not (start == end == 'auto'):
        raise ValueError(f"rendering_options: ray_start and ray_end must both be 'auto' or both numbers, "
                         f"got {start!r} and {end!r}")
    start, end = math_utils.get_ray_limits_box(ray_origins, ray_directions, rendering_options['box_warp'])
    hit = end > start
    if hit.any():
        hit_starts = start[hit]
        start = torch.where(hit, start, hit_starts.min())
        end = torch.where(hit, end, hit_starts.max())
    else:
        start = torch.zeros_like(start)
        end = torch.zeros_like(end)
    return start, end


# ----------------------------------------------------------------------------


_REQUIRED = ('ray_start', 'ray_end', 'box_warp', 'depth_resolution', 'depth_resolution_importance')


def _check_options(options: dict) -> None:
    missing = [key for key in _REQUIRED if key not in options]
    if missing:
        raise KeyError(f'rendering_options is missing {missing} (needs {list(_REQUIRED)})')
    if int(options['depth_resolution']) < 2:
        raise ValueError(f"rendering_options: depth_resolution must be >= 2, got {options['depth_resolution']}")
    if int(options['depth_resolution_importance']) < 0:
        raise ValueError(f"rendering_options: depth_resolution_importance must be >= 0, "
                         f"got {options['depth_resolution_importance']}")
    if options.get('plane_convention', 'eg3d') not in PLANE_CONVENTIONS:
        raise ValueError(f"rendering_options: plane_convention must be one of {PLANE_CONVENTIONS}, "
                         f"got {options['plane_convention']!r}")


class ImportanceRenderer(torch.nn.Module):
    """Renders tri-planes along rays: stratified coarse samples, importance-sampled fine samples from
    the coarse weights, then compositing over both sets (EG3D Sec. 4, 48 + 48 samples in the paper).

    Not persistent: official pickles store it by import path with state {ray_marcher, plane_axes},
    which is all this class uses.
    """

    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        self.plane_axes = generate_planes()                             # Plain tensor, as upstream (not a buffer).

    def _axes(self, options: dict, like: torch.Tensor) -> torch.Tensor:
        convention = options.get('plane_convention', 'eg3d')
        axes = self.plane_axes if convention == 'eg3d' else generate_planes(convention)
        return axes.to(device=like.device)

    def forward(self, planes: torch.Tensor, decoder, ray_origins: torch.Tensor, ray_directions: torch.Tensor,
                rendering_options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """planes [N, 3, C, H, W], rays [N, M, 3] -> (features [N, M, C_out], depth [N, M, 1],
        total weight [N, M, 1])."""
        with misc.profiled('renderer'):
            options = rendering_options
            _check_options(options)
            misc.assert_shape(planes, [None, 3, None, None, None], name='planes')
            n, m = ray_origins.shape[:2]
            misc.assert_shape(ray_origins, [planes.shape[0], None, 3], name='ray_origins')
            misc.assert_shape(ray_directions, [n, m, 3], name='ray_directions')
            jitter = bool(options.get('jitter', True))
            # The gather path reads the planes from a channels-last table, made once for both passes.
            cache = {}

            # Coarse pass.
            start, end = ray_bounds(ray_origins, ray_directions, options)
            depths_coarse = self.sample_stratified(ray_origins, start, end, int(options['depth_resolution']),
                                                   options.get('disparity_space_sampling', False), jitter=jitter)
            colors_coarse, densities_coarse = self._evaluate(planes, decoder, ray_origins, ray_directions,
                                                             depths_coarse, options, cache)

            colors, densities, depths = [colors_coarse], [densities_coarse], [depths_coarse]

            # Fine pass: importance samples from the coarse weights (the coarse composite itself is
            # not needed), then compositing over coarse and fine samples together. That equals
            # upstream's unify_samples + ray_marcher up to rounding, without moving the colours.
            n_importance = int(options['depth_resolution_importance'])
            if n_importance > 0:
                weights = interval_weights(densities_coarse, depths_coarse, options.get('clamp_mode', 'softplus'))
                depths_fine = self.sample_importance(depths_coarse, weights, n_importance, det=not jitter)
                colors_fine, densities_fine = self._evaluate(planes, decoder, ray_origins, ray_directions,
                                                             depths_fine, options, cache)
                colors.append(colors_fine)
                densities.append(densities_fine)
                depths.append(depths_fine)
            host = composite_sample_sets_host(colors, densities, depths, options)
            if host is not None:
                return host
            rgb, depth, weights = composite_sample_sets(colors, densities, depths, options)
            return rgb, depth, weights.sum(2)

    def _evaluate(self, planes, decoder, ray_origins, ray_directions, depths, options, cache=None):
        """Decode at o + t d for depths [N, M, S, 1] -> (colours [N, M, S, C], raw densities [N, M, S, 1])."""
        n, m, s, _ = depths.shape
        coordinates = (ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)).reshape(n, -1, 3)
        directions = ray_directions.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, -1, 3)
        out = self.run_model(planes, decoder, coordinates, directions, options, _cache=cache)
        return out['rgb'].reshape(n, m, s, -1), out['sigma'].reshape(n, m, s, 1)

    def run_model(self, planes: torch.Tensor, decoder, sample_coordinates: torch.Tensor,
                  sample_directions: torch.Tensor, options: dict, _cache: dict | None = None) -> dict:
        """Decoder outputs {'rgb': [N, P, C_out], 'sigma': [N, P, 1] raw} at points [N, P, 3].

        A decoder with forward_plane_mean(mean features [N, P, C], directions) gets the planes' mean
        directly when the gather path is on (see plane_sampling); other decoders get [N, 3, P, C]."""
        misc.assert_shape(sample_coordinates, [planes.shape[0], None, 3], name='sample_coordinates')
        if hasattr(decoder, 'forward_plane_mean') and plane_gather.use_gather(planes, options.get('plane_sampling')):
            if _cache is None:
                _cache = {}
            if 'table' not in _cache:
                _cache['table'] = plane_gather.feature_table(planes)
            features = plane_gather.sample_plane_mean(self._axes(options, planes), planes, sample_coordinates,
                                                      box_warp=options['box_warp'], table=_cache['table'])
            out = decoder.forward_plane_mean(features, sample_directions)
        else:
            features = sample_from_planes(self._axes(options, planes), planes, sample_coordinates,
                                          padding_mode='zeros', box_warp=options['box_warp'])
            out = decoder(features, sample_directions)
        n, p = sample_coordinates.shape[:2]
        if not (isinstance(out, dict) and 'rgb' in out and 'sigma' in out):
            raise TypeError(f'the decoder must return a dict with rgb and sigma, got {type(out).__name__}')
        misc.assert_shape(out['rgb'], [n, p, None], name="decoder output 'rgb'")
        misc.assert_shape(out['sigma'], [n, p, 1], name="decoder output 'sigma'")
        if options.get('density_noise', 0) > 0:
            out['sigma'] = out['sigma'] + torch.randn_like(out['sigma']) * options['density_noise']
        return out

    def sort_samples(self, all_depths, all_colors, all_densities):
        """Sort samples along each ray by depth (upstream's method; forward uses composite_sample_sets)."""
        all_depths, indices = torch.sort(all_depths, dim=-2)
        all_colors = torch.gather(all_colors, -2, indices.expand(-1, -1, -1, all_colors.shape[-1]))
        all_densities = torch.gather(all_densities, -2, indices)
        return all_depths, all_colors, all_densities

    def unify_samples(self, depths1, colors1, densities1, depths2, colors2, densities2):
        """Merge two sample sets [N, M, S_i, *] into one, sorted by depth."""
        return self.sort_samples(torch.cat([depths1, depths2], dim=-2), torch.cat([colors1, colors2], dim=-2),
                                 torch.cat([densities1, densities2], dim=-2))

    def sample_stratified(self, ray_origins, ray_start, ray_end, depth_resolution: int,
                          disparity_space_sampling: bool = False, jitter: bool = True) -> torch.Tensor:
        """Coarse depths [N, M, D, 1]: t_k = start + k * delta (k < D, delta = (end - start) / (D - 1))
        plus U[0, 1) * delta per sample, so samples reach end + delta (upstream). With disparity
        sampling the same is done in s in [0, 1], then depth = 1 / ((1 - s) / start + s / end).
        ray_start / ray_end: numbers or [N, M, 1] tensors ('auto' bounds)."""
        n, m = ray_origins.shape[:2]
        dtype, device = ray_origins.dtype, ray_origins.device
        d = depth_resolution
        if disparity_space_sampling:
            depths = torch.linspace(0, 1, d, dtype=dtype, device=device).reshape(1, 1, d, 1).repeat(n, m, 1, 1)
            delta = 1 / (d - 1)
        elif isinstance(ray_start, torch.Tensor):
            depths = math_utils.linspace(ray_start, ray_end, d).permute(1, 2, 0, 3)
            delta = ((ray_end - ray_start) / (d - 1))[..., None]
        else:
            depths = torch.linspace(ray_start, ray_end, d, dtype=dtype, device=device).reshape(1, 1, d, 1).repeat(n, m, 1, 1)
            delta = (ray_end - ray_start) / (d - 1)
        if jitter:
            depths = depths + _uniform('render.stratified_u', depths.shape, depths) * delta
        if disparity_space_sampling:
            depths = 1 / (1 / ray_start * (1 - depths) + 1 / ray_end * depths)
        return depths

    @torch.no_grad()
    def sample_importance(self, z_vals: torch.Tensor, weights: torch.Tensor, N_importance: int,
                          det: bool = False) -> torch.Tensor:
        """Fine depths [N, M, N_importance, 1] from coarse depths [N, M, S, 1] and their weights
        [N, M, S-1, 1]. Upstream's smoothing: max-pool (2, stride 1, pad 1) then average-pool (2,
        stride 1) over the weights, plus 0.01; bins at the coarse midpoints; pdf = smoothed[1:-1]."""
        n, m, s, _ = z_vals.shape
        z_vals = z_vals.reshape(n * m, s)
        plugin = render_ops_fused.host_plugin(z_vals, weights)
        if plugin is not None and 4 <= s <= 1024:
            # One pass per ray on the host (torch_utils/ops/render_ops), from the same uniforms.
            if det:
                u = (torch.arange(N_importance, dtype=z_vals.dtype) + 0.5) / N_importance
                u = u.expand(n * m, N_importance)
            else:
                u = _uniform('render.importance_u', [n * m, N_importance], z_vals)
            return plugin.importance(z_vals, weights.reshape(n * m, s - 1), u).reshape(n, m, N_importance, 1)
        weights = weights.reshape(n * m, 1, s - 1)
        weights = F.max_pool1d(weights, 2, 1, padding=1)
        # squeeze(1), not upstream's squeeze(): a single ray would otherwise lose its batch dim.
        weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
        bins = 0.5 * (z_vals[:, :-1] + z_vals[:, 1:])
        fine = sample_pdf(bins, weights[:, 1:-1], N_importance, det=det)
        return fine.detach().reshape(n, m, N_importance, 1)

    def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
        """Upstream's method name for the module-level sample_pdf."""
        return sample_pdf(bins, weights, N_importance, det=det, eps=eps)
