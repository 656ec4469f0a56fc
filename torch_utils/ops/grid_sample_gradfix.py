"""Upstream's grid_sample_gradfix, kept as a name only: native grid_sample has a double backward on
torch >= 2.0 (tests/test_ops_ref.py checks it with gradgradcheck)."""

import torch
import torch.nn.functional as F

enabled = False  # Kept for scripts that set it; has no effect.


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear, zero padding, align_corners=False: the mode upstream's augment pipe uses."""
    return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
