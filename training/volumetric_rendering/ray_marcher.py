"""Alpha compositing along rays (EG3D Sec. 4; the volume rendering of NeRF, Mildenhall et al. Eq. 3),
on the midpoints of the intervals between consecutive samples, as upstream's MipRayMarcher2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------


class MipRayMarcher2(torch.nn.Module):
    """Composite S sorted samples per ray into one feature vector and one depth.

    Upstream quirks kept for compatibility with trained models:
    - colour, raw density and depth are averaged over each interval's two end samples (S - 1
      intervals, no infinite last interval), and the density is activated as softplus(x - 1) there;
    - the expected depth is clamped to the min / max sample depth of the whole batch tensor;
    - the composite is mapped x * 2 - 1, so empty space is -1 unless white_back.
    Not persistent: official pickles store it by import path (its state holds nothing of its own).
    """

    def __init__(self):
        super().__init__()

    def forward(self, colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
                rendering_options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """colors [N, M, S, C], densities (raw) [N, M, S, 1], depths [N, M, S, 1], sorted along S.

        Returns (features [N, M, C], depth [N, M, 1], weights [N, M, S-1, 1]).
        """
        if not (colors.ndim == densities.ndim == depths.ndim == 4) or colors.shape[:3] != depths.shape[:3] \
                or densities.shape[-1] != 1 or depths.shape[-1] != 1 or densities.shape[:3] != depths.shape[:3]:
            raise ValueError(f'MipRayMarcher2: expected colors [N, M, S, C], densities and depths [N, M, S, 1]; '
                             f'got {list(colors.shape)}, {list(densities.shape)}, {list(depths.shape)}')
        if depths.shape[2] < 2:
            raise ValueError(f'MipRayMarcher2: need at least 2 samples per ray, got {depths.shape[2]}')
        clamp_mode = rendering_options.get('clamp_mode', 'softplus')
        if clamp_mode != 'softplus':
            raise ValueError(f"MipRayMarcher2: clamp_mode must be 'softplus' (the only mode upstream implements), got {clamp_mode!r}")

        deltas = depths[:, :, 1:] - depths[:, :, :-1]
        colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
        densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
        depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2

        # Shifted softplus: a raw density of 0 means "mostly empty" (EG3D's activation).
        densities_mid = F.softplus(densities_mid - 1)
        alpha = 1 - torch.exp(-densities_mid * deltas)
        # Transmittance before each interval; the 1e-10 is upstream's, kept for identical numbers.
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2), dim=-2)
        weights = alpha * transmittance[:, :, :-1]

        composite_rgb = torch.sum(weights * colors_mid, dim=-2)
        weight_total = weights.sum(dim=2)
        composite_depth = torch.sum(weights * depths_mid, dim=-2) / weight_total
        # Rays with no weight at all (0 / 0) end up at the far limit. The limits are the global min
        # and max over the batch, not per ray: an upstream quirk kept for identical depth images.
        composite_depth = torch.nan_to_num(composite_depth, float('inf'))
        composite_depth = torch.clamp(composite_depth, torch.min(depths), torch.max(depths))

        if rendering_options.get('white_back', False):
            composite_rgb = composite_rgb + 1 - weight_total
        composite_rgb = composite_rgb * 2 - 1
        return composite_rgb, composite_depth, weights

    def run_forward(self, colors, densities, depths, rendering_options):
        """Upstream's name for forward."""
        return self.forward(colors, densities, depths, rendering_options)
