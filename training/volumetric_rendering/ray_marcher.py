"""Alpha compositing along rays (EG3D Sec. 4; the volume rendering of NeRF, Mildenhall et al. Eq. 3),
on the midpoints of the intervals between consecutive samples, as upstream's MipRayMarcher2.

Upstream quirks kept for compatibility with trained models:
- colour, raw density and depth are averaged over each interval's two end samples (S samples give
  S - 1 intervals, no infinite last interval), and the density is activated there as softplus(x - 1);
- the expected depth is clamped to the min / max sample depth of the whole batch tensor;
- the composite is mapped x * 2 - 1, so empty space is -1 unless white_back.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------


def interval_weights(densities: torch.Tensor, depths: torch.Tensor, clamp_mode: str = 'softplus') -> torch.Tensor:
    """Compositing weights [N, M, S-1, 1] of the intervals between sorted samples (raw densities and
    depths [N, M, S, 1]): w_i = alpha_i * prod_{j<i} (1 - alpha_j + 1e-10), alpha_i = 1 - exp(-sigma_i delta_i)."""
    if clamp_mode != 'softplus':
        raise ValueError(f"clamp_mode must be 'softplus' (the only mode upstream implements), got {clamp_mode!r}")
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    # Shifted softplus at interval midpoints: a raw density of 0 means "mostly empty" (EG3D's activation).
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-densities_mid * deltas)
    # Transmittance before each interval; the 1e-10 is upstream's, kept for identical numbers.
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2), dim=-2)
    return alpha * transmittance[:, :, :-1]


def composite_depth(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Expected depth [N, M, 1] over interval midpoints. Rays with no weight at all (0 / 0) go to the
    far limit; the limits are the min and max over the whole batch tensor, not per ray (upstream)."""
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    depth = torch.sum(weights * depths_mid, dim=-2) / weights.sum(dim=2)
    depth = torch.nan_to_num(depth, float('inf'))
    return torch.clamp(depth, torch.min(depths), torch.max(depths))


def _check(colors, densities, depths, who):
    if not (colors.ndim == densities.ndim == depths.ndim == 4) or colors.shape[:3] != depths.shape[:3] \
            or densities.shape[-1] != 1 or depths.shape[-1] != 1 or densities.shape[:3] != depths.shape[:3]:
        raise ValueError(f'{who}: expected colors [N, M, S, C], densities and depths [N, M, S, 1]; '
                         f'got {list(colors.shape)}, {list(densities.shape)}, {list(depths.shape)}')

# ----------------------------------------------------------------------------


class MipRayMarcher2(torch.nn.Module):
    """Composite S depth-sorted samples per ray into one feature vector and one depth.

    Not persistent: official pickles store it by import path (its state holds nothing of its own).
    """

    def __init__(self):
        super().__init__()

    def forward(self, colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
                rendering_options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """colors [N, M, S, C], raw densities [N, M, S, 1], depths [N, M, S, 1], sorted along S.

        Returns (features [N, M, C], depth [N, M, 1], weights [N, M, S-1, 1]).
        """
        _check(colors, densities, depths, 'MipRayMarcher2')
        if depths.shape[2] < 2:
            raise ValueError(f'MipRayMarcher2: need at least 2 samples per ray, got {depths.shape[2]}')
        weights = interval_weights(densities, depths, rendering_options.get('clamp_mode', 'softplus'))
        colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
        composite_rgb = torch.sum(weights * colors_mid, dim=-2)
        if rendering_options.get('white_back', False):
            composite_rgb = composite_rgb + 1 - weights.sum(dim=2)
        return composite_rgb * 2 - 1, composite_depth(weights, depths), weights

    def run_forward(self, colors, densities, depths, rendering_options):
        """Upstream's name for forward."""
        return self.forward(colors, densities, depths, rendering_options)


def composite_sample_sets(colors: Sequence[torch.Tensor], densities: Sequence[torch.Tensor],
                          depths: Sequence[torch.Tensor], rendering_options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MipRayMarcher2 over the depth-sorted union of several sample sets (e.g. coarse and fine), equal
    to it up to float rounding, without concatenating or reordering the wide colour tensors.

    Only depths and densities are merged and sorted. Interval i's midpoint colour
    (c_i + c_{i+1}) / 2 weighs each sample s by (w_{s-1} + w_s) / 2; those per-sample weights are
    scattered back to the samples' original places and contracted with each set's colours.
    """
    for c, s, d in zip(colors, densities, depths):
        _check(c, s, d, 'composite_sample_sets')
    all_depths, order = torch.sort(torch.cat(list(depths), dim=-2), dim=-2)
    all_densities = torch.gather(torch.cat(list(densities), dim=-2), -2, order)
    if all_depths.shape[2] < 2:
        raise ValueError(f'composite_sample_sets: need at least 2 samples per ray, got {all_depths.shape[2]}')
    weights = interval_weights(all_densities, all_depths, rendering_options.get('clamp_mode', 'softplus'))

    sample_weights = (F.pad(weights, (0, 0, 1, 0)) + F.pad(weights, (0, 0, 0, 1))) / 2      # Sorted order.
    sample_weights = torch.zeros_like(sample_weights).scatter(-2, order, sample_weights)     # Original order.
    composite_rgb = 0
    for c, w in zip(colors, torch.split(sample_weights, [c.shape[2] for c in colors], dim=-2)):
        # sum_s w_s c_s per ray as a batched [1, S] @ [S, C] product: no [N, M, S, C] temporary.
        composite_rgb = composite_rgb + torch.matmul(w.transpose(-1, -2), c).squeeze(-2)
    if rendering_options.get('white_back', False):
        composite_rgb = composite_rgb + 1 - weights.sum(dim=2)
    return composite_rgb * 2 - 1, composite_depth(weights, all_depths), weights


def composite_sample_sets_host(colors: Sequence[torch.Tensor], densities: Sequence[torch.Tensor],
                               depths: Sequence[torch.Tensor], rendering_options: dict):
    """composite_sample_sets for the renderer's no_grad forward on the host: (features [N, M, C],
    depth [N, M, 1], total weight [N, M, 1]) from one fused pass per ray (torch_utils/ops/render_ops:
    merge the sets by depth, interval weights, colours, depth), or None where it cannot serve (grad
    mode, CUDA, other dtypes, more than 4 sets or 1024 samples per ray, EG3D_FUSED_OPS=0). Samples
    at exactly equal depths are taken in set order (a stable merge), where torch.sort's order is
    unspecified: the two may then differ (either order is a valid MipRayMarcher2 input)."""
    from torch_utils.ops import render_ops_fused
    samples = sum(d.shape[2] for d in depths)
    if torch.is_grad_enabled() or rendering_options.get('clamp_mode', 'softplus') != 'softplus' \
            or len(depths) > render_ops_fused.MAX_SETS or samples > render_ops_fused.MAX_RAY_SAMPLES:
        return None
    plugin = render_ops_fused.host_plugin(*colors, *densities, *depths)
    if plugin is None:
        return None
    for c, s, d in zip(colors, densities, depths):
        _check(c, s, d, 'composite_sample_sets')
    if samples < 2:
        raise ValueError(f'composite_sample_sets: need at least 2 samples per ray, got {samples}')
    rgb, depth, weight_sum = plugin.composite(list(colors), list(densities), list(depths),
                                              bool(rendering_options.get('white_back', False)))
    # As composite_depth: 0 / 0 to the far limit, then the batch's depth range (upstream).
    lo = torch.stack([d.min() for d in depths]).min()
    hi = torch.stack([d.max() for d in depths]).max()
    return rgb, torch.clamp(torch.nan_to_num(depth, float('inf')), lo, hi), weight_sum
