"""Dual discrimination (EG3D Sec. 4.3): the discriminator sees the super-resolved image together with
the upsampled raw neural rendering, 6 channels in all, so that the final image stays consistent with
the 3-D rendering.

DualDiscriminator has upstream's constructor and parameter names (eg3d-facts 5.5, 5.6). Deviation:
disc_c_noise does not modify the caller's label tensor (upstream adds the noise in place).
Not implemented: upstream's DummyDualDiscriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import Discriminator


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

# ----------------------------------------------------------------------------


def _check_images(img, who: str, keys=('image', 'image_raw')) -> None:
    if not isinstance(img, dict) or any(key not in img for key in keys):
        raise TypeError(f'{who}: expects a dict with {list(keys)} (the generator output), got '
                        f'{type(img).__name__}{" with " + str(sorted(img)) if isinstance(img, dict) else ""}')


def _noisy_labels(c: torch.Tensor, disc_c_noise: float) -> torch.Tensor:
    """c + N(0, 1) * std_over_batch(c) * disc_c_noise, as a new tensor (upstream adds it in place, which
    changed the caller's labels; we do not)."""
    if disc_c_noise > 0:
        c = c + torch.randn_like(c) * c.std(0) * disc_c_noise
    return c


@persistence.persistent_class
class DualDiscriminator(Discriminator):
    """StyleGAN2 discriminator on 6 channels: the final image and the raw neural rendering resized to
    the same size with filtered_resizing (EG3D Sec. 4.3), conditioned on the camera by projection."""

    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality: 25 (camera).
        img_resolution,                 # Input resolution (of 'image').
        img_channels,                   # Channels of each image (3); the network sees twice this.
        architecture        = 'resnet', # 'orig', 'skip' or 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use fp16 (on CUDA) for the N highest resolutions.
        conv_clamp          = 256,      # Clamp conv outputs to +-X; None = no clamp.
        cmap_dim            = None,     # Dimensionality of the mapped label; None = the channels at 4x4.
        disc_c_noise        = 0,        # Gaussian noise on the label, in units of its std over the batch; 0 = off.
        block_kwargs        = {},       # Extra DiscriminatorBlock arguments (freeze_layers).
        mapping_kwargs      = {},       # Extra MappingNetwork arguments.
        epilogue_kwargs     = {},       # Extra DiscriminatorEpilogue arguments (mbstd_group_size).
    ):
        super().__init__(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels * 2,
                         architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                         num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                         block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))
        self.disc_c_noise = disc_c_noise

    def forward(self, img, c, update_emas=False, **block_kwargs) -> torch.Tensor:
        """img {'image': [N, 3, H, W], 'image_raw': [N, 3, h, w]}, c [N, c_dim] -> logits [N, 1]."""
        _check_images(img, 'DualDiscriminator')
        image = img['image']
        image_raw = filtered_resizing(img['image_raw'], size=image.shape[-1], f=self.resample_filter)
        return super().forward(torch.cat([image, image_raw], dim=1), _noisy_labels(c, self.disc_c_noise),
                               update_emas=update_emas, **block_kwargs)


@persistence.persistent_class
class SingleDiscriminator(Discriminator):
    """StyleGAN2 discriminator on the final image alone (img['image']), for comparison with dual
    discrimination (EG3D Sec. 4.3 ablation)."""

    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input channels.
        architecture        = 'resnet', # 'orig', 'skip' or 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use fp16 (on CUDA) for the N highest resolutions.
        conv_clamp          = 256,      # Clamp conv outputs to +-X; None = no clamp.
        cmap_dim            = None,     # Dimensionality of the mapped label; None = the channels at 4x4.
        sr_upsample_factor  = 1,        # Accepted for upstream's signature; unused.
        disc_c_noise        = 0,        # Gaussian label noise as in DualDiscriminator; 0 = off.
        block_kwargs        = {},       # Extra DiscriminatorBlock arguments.
        mapping_kwargs      = {},       # Extra MappingNetwork arguments.
        epilogue_kwargs     = {},       # Extra DiscriminatorEpilogue arguments.
    ):
        _ = sr_upsample_factor
        super().__init__(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                         architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                         num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                         block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)
        self.disc_c_noise = disc_c_noise

    def forward(self, img, c, update_emas=False, **block_kwargs) -> torch.Tensor:
        """img {'image': [N, C, H, W], ...}, c [N, c_dim] -> logits [N, 1]."""
        _check_images(img, 'SingleDiscriminator', keys=('image',))
        return super().forward(img['image'], _noisy_labels(c, self.disc_c_noise), update_emas=update_emas,
                               **block_kwargs)
