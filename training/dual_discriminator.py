"""Dual discrimination (EG3D Sec. 4.3): the discriminator sees the super-resolved image together with
the upsampled raw neural rendering, 6 channels in all.

(The discriminator classes arrive with the networks work; this module already holds the resizing that
the loss shares with them.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d


def filtered_resizing(image: torch.Tensor, size: int, f: torch.Tensor | None = None,
                      filter_mode: str | float = 'antialiased') -> torch.Tensor:
    """Resize [N, C, H, W] images to size x size.

    filter_mode: 'antialiased' (bilinear with antialiasing, upstream's default), 'classic' (FIR
    upsampling by 2, bilinear to 2 * size + 2, FIR downsampling by 2 with a 1-pixel crop), 'none'
    (plain bilinear), or a float a in [0, 1] blending (1 - a) * plain + a * antialiased.
    """
    if filter_mode == 'antialiased':
        return F.interpolate(image, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
    if filter_mode == 'none':
        return F.interpolate(image, size=(size, size), mode='bilinear', align_corners=False)
    if filter_mode == 'classic':
        if f is None:
            raise ValueError("filtered_resizing: filter_mode 'classic' needs a resample filter f")
        x = upfirdn2d.upsample2d(image, f, up=2)
        x = F.interpolate(x, size=(size * 2 + 2, size * 2 + 2), mode='bilinear', align_corners=False)
        return upfirdn2d.downsample2d(x, f, down=2, flip_filter=True, padding=-1)
    if isinstance(filter_mode, (int, float)) and not isinstance(filter_mode, bool) and 0 <= filter_mode <= 1:
        aliased = F.interpolate(image, size=(size, size), mode='bilinear', align_corners=False)
        smooth = F.interpolate(image, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
        return (1 - filter_mode) * aliased + filter_mode * smooth
    raise ValueError(f"filtered_resizing: filter_mode must be 'antialiased', 'classic', 'none' or a float in "
                     f"[0, 1], got {filter_mode!r}")
