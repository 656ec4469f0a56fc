"""Super-resolution of the neural rendering (EG3D Sec. 4.2): StyleGAN2 synthesis blocks that turn the
raw feature image (and its first three channels, the raw RGB) into the final image.

Upstream's modules, parameter-compatible with the official checkpoints (eg3d-facts 5.4):

    class                       image   input   block0                       block1
    SuperresolutionHybrid8XDC   512     128     up, 32 -> 256 at 256         up, 256 -> 128 at 512
    SuperresolutionHybrid8X     512     128     up, 32 -> 128 at 256         up, 128 -> 64 at 512
    SuperresolutionHybrid4X     256     128     no-up, 32 -> 128 at 128      up, 128 -> 64 at 256
    SuperresolutionHybrid2X     128     64      no-up, 32 -> 128 at 64       up, 128 -> 64 at 128

and SuperresolutionGeneric, the same construction for any input resolution, output resolution and
block widths (the tiny preset's 32 -> 64 px).

Shared behaviour, as upstream: only the last w (ws[:, -1]) styles every SR layer; raw RGB and
features are first resized to the input resolution with bilinear interpolation (antialiased when
sr_antialias); the image path starts from the raw RGB, so the output is the upsampled raw image plus
learned ToRGB residuals. channel_base, channel_max, num_fp16_res and conv_clamp are accepted and
ignored (upstream's train.py passes them); every block uses fp16 (on CUDA) with conv_clamp 256 when
sr_num_fp16_res > 0. Upstream hard-codes w_dim 512; here it is a parameter with that default.
Not implemented: upstream's legacy SuperresolutionHybridDeepfp32 (no released model uses it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc, persistence
from torch_utils.ops import upfirdn2d
from training.networks_stylegan2 import SynthesisBlock, SynthesisLayer, ToRGBLayer

# ----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisBlockNoUp(torch.nn.Module):
    """A 'skip' SynthesisBlock that keeps its input resolution: conv0 and conv1 at `resolution`, and
    img = img + torgb(x) without upsampling img (upstream's name and parameter names)."""

    def __init__(self,
        in_channels,                            # Input channels (> 0: this block never starts from a constant).
        out_channels,                           # Output channels.
        w_dim,                                  # Intermediate latent (W) dimensionality.
        resolution,                             # Input and output resolution.
        img_channels,                           # Number of image channels.
        is_last,                                # Is this the last block? (kept for upstream's signature)
        architecture            = 'skip',       # Only 'skip'.
        resample_filter         = [1, 3, 3, 1], # Stored for upstream's buffer name; no resampling happens.
        conv_clamp              = 256,          # Clamp conv outputs to +-X; None = no clamp.
        use_fp16                = False,        # Compute in float16 (on CUDA only)?
        fp16_channels_last      = False,        # Use channels_last memory format with fp16?
        fused_modconv_default   = True,         # Default fused_modconv: True, False or 'inference_only'.
        **layer_kwargs,                         # Extra SynthesisLayer arguments.
    ):
        if in_channels <= 0 or architecture != 'skip':
            raise ValueError(f"SynthesisBlockNoUp: needs in_channels > 0 and architecture 'skip', got "
                             f"{in_channels} and {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 2
        self.num_torgb = 1
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        """x [N, C_in, res, res], img [N, img_channels, res, res] or None, ws [N, 3, w_dim] -> (x, img)."""
        _ = update_emas
        misc.assert_shape(ws, [None, 3, self.w_dim], f'SynthesisBlockNoUp b{self.resolution}: ws')
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution],
                          f'SynthesisBlockNoUp b{self.resolution}: x')
        if ws.device.type != 'cuda':
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = (not self.training)

        w0, w1, w2 = ws.unbind(dim=1)
        x = x.to(dtype=dtype, memory_format=memory_format)
        x = self.conv0(x, w0, fused_modconv=fused_modconv, **layer_kwargs)
        x = self.conv1(x, w1, fused_modconv=fused_modconv, **layer_kwargs)
        y = self.torgb(x, w2, fused_modconv=fused_modconv).to(dtype=torch.float32,
                                                              memory_format=torch.contiguous_format)
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution],
                              f'SynthesisBlockNoUp b{self.resolution}: img')
            y = img + y  # Not in place: img may be the caller's tensor (the raw image).
        return x, y

    def extra_repr(self) -> str:
        return f'resolution={self.resolution:d}, architecture={self.architecture}'

# ----------------------------------------------------------------------------


def resize_to(x: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of [N, C, H, W] to size x size, antialiased on request."""
    return F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False, antialias=antialias)


class _SuperresolutionBase(torch.nn.Module):
    """Blocks block0, block1, ... styled by ws[:, -1]; subclasses build them and set input_resolution."""

    input_resolution: int
    resize_when: str = 'different'   # 'different': resize inputs of any other size; 'smaller': only smaller ones.

    def _make_blocks(self, channels, block_channels, input_resolution, img_resolution, w_dim, use_fp16,
                     block_kwargs):
        """One no-up block per surplus width at input_resolution, then one up block per factor 2."""
        n_up = int(np.log2(img_resolution // input_resolution))
        n_blocks = len(block_channels)
        self.num_blocks = n_blocks
        resolution = input_resolution
        in_channels = channels
        for idx, out_channels in enumerate(block_channels):
            up = idx >= n_blocks - n_up
            resolution = resolution * 2 if up else resolution
            cls = SynthesisBlock if up else SynthesisBlockNoUp
            block = cls(in_channels, out_channels, w_dim=w_dim, resolution=resolution, img_channels=3,
                        is_last=(idx == n_blocks - 1), use_fp16=use_fp16, conv_clamp=(256 if use_fp16 else None),
                        **block_kwargs)
            setattr(self, f'block{idx}', block)
            in_channels = out_channels

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """rgb [N, 3, R, R] raw image, x [N, C, R, R] feature image, ws [N, num_ws, w_dim] ->
        image [N, 3, img_resolution, img_resolution]."""
        with misc.profiled('superres'):
            misc.assert_shape(rgb, [x.shape[0], 3, x.shape[2], x.shape[3]], 'superresolution: rgb')
            ws = ws[:, -1:, :].repeat(1, 3, 1)
            size = x.shape[-1]
            if size != self.input_resolution and (self.resize_when == 'different' or size < self.input_resolution):
                rgb_is_x = rgb.data_ptr() == x.data_ptr() and rgb.stride() == x.stride()  # The generator's rgb = x[:, :3].
                x = resize_to(x, self.input_resolution, self.sr_antialias)
                # Resized per channel, so x's first three channels are rgb resized: not done twice.
                rgb = x[:, :3] if rgb_is_x else resize_to(rgb, self.input_resolution, self.sr_antialias)
            for idx in range(self.num_blocks):
                x, rgb = getattr(self, f'block{idx}')(x, rgb, ws, **block_kwargs)
        return rgb

    def extra_repr(self) -> str:
        return f'input_resolution={self.input_resolution:d}, img_resolution={self.img_resolution:d}'


def _check_resolution(cls_name: str, img_resolution: int, expected: int) -> None:
    if img_resolution != expected:
        raise ValueError(f'{cls_name}: makes {expected}x{expected} images, but img_resolution is {img_resolution} '
                         f'(use SuperresolutionGeneric for other sizes)')

# ----------------------------------------------------------------------------
# Upstream's classes. The constructor arguments are upstream's (plus w_dim); most are swallowed.


@persistence.persistent_class
class SuperresolutionHybrid8XDC(_SuperresolutionBase):
    """128 -> 512 px with wide blocks (FFHQ and AFHQ at 512); no top-level resample_filter buffer."""

    def __init__(self,
        channels,                   # Channels of the feature image (the decoder's output, 32 upstream).
        img_resolution,             # Output resolution: 512.
        sr_num_fp16_res,            # > 0: every block in fp16 (CUDA) with conv_clamp 256.
        sr_antialias,               # Antialias the resize to the input resolution?
        num_fp16_res    = 4,        # Ignored (upstream's train.py passes it).
        conv_clamp      = None,     # Ignored; see sr_num_fp16_res.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        w_dim           = 512,      # Intermediate latent (W) dimensionality (fixed at 512 upstream).
        **block_kwargs,             # Extra SynthesisBlock arguments (fused_modconv_default).
    ):
        super().__init__()
        _check_resolution(type(self).__name__, img_resolution, 512)
        self.img_resolution = img_resolution
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        self._make_blocks(channels, [256, 128], 128, 512, w_dim, sr_num_fp16_res > 0, block_kwargs)


@persistence.persistent_class
class SuperresolutionHybrid8X(_SuperresolutionBase):
    """128 -> 512 px (upstream's earlier 512 module)."""

    def __init__(self,
        channels,                   # Channels of the feature image.
        img_resolution,             # Output resolution: 512.
        sr_num_fp16_res,            # > 0: every block in fp16 (CUDA) with conv_clamp 256.
        sr_antialias,               # Antialias the resize to the input resolution?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        w_dim           = 512,      # Intermediate latent (W) dimensionality.
        **block_kwargs,             # Extra SynthesisBlock arguments.
    ):
        super().__init__()
        _check_resolution(type(self).__name__, img_resolution, 512)
        self.img_resolution = img_resolution
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        self._make_blocks(channels, [128, 64], 128, 512, w_dim, sr_num_fp16_res > 0, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))


@persistence.persistent_class
class SuperresolutionHybrid4X(_SuperresolutionBase):
    """128 -> 256 px. As upstream, inputs are resized only when smaller than 128."""

    resize_when = 'smaller'

    def __init__(self,
        channels,                   # Channels of the feature image.
        img_resolution,             # Output resolution: 256.
        sr_num_fp16_res,            # > 0: every block in fp16 (CUDA) with conv_clamp 256.
        sr_antialias,               # Antialias the resize to the input resolution?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        w_dim           = 512,      # Intermediate latent (W) dimensionality.
        **block_kwargs,             # Extra SynthesisBlock arguments.
    ):
        super().__init__()
        _check_resolution(type(self).__name__, img_resolution, 256)
        self.img_resolution = img_resolution
        self.input_resolution = 128
        self.sr_antialias = sr_antialias
        self._make_blocks(channels, [128, 64], 128, 256, w_dim, sr_num_fp16_res > 0, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))


@persistence.persistent_class
class SuperresolutionHybrid2X(_SuperresolutionBase):
    """64 -> 128 px (ShapeNet; also the official small fixture)."""

    def __init__(self,
        channels,                   # Channels of the feature image.
        img_resolution,             # Output resolution: 128.
        sr_num_fp16_res,            # > 0: every block in fp16 (CUDA) with conv_clamp 256.
        sr_antialias,               # Antialias the resize to the input resolution?
        num_fp16_res    = 4,        # Ignored.
        conv_clamp      = None,     # Ignored.
        channel_base    = None,     # Ignored.
        channel_max     = None,     # Ignored.
        w_dim           = 512,      # Intermediate latent (W) dimensionality.
        **block_kwargs,             # Extra SynthesisBlock arguments.
    ):
        super().__init__()
        _check_resolution(type(self).__name__, img_resolution, 128)
        self.img_resolution = img_resolution
        self.input_resolution = 64
        self.sr_antialias = sr_antialias
        self._make_blocks(channels, [128, 64], 64, 128, w_dim, sr_num_fp16_res > 0, block_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))

# ----------------------------------------------------------------------------


@persistence.persistent_class
class SuperresolutionGeneric(_SuperresolutionBase):
    """input_resolution -> img_resolution (a power-of-two factor >= 1) with one block per entry of
    block_channels: the first len(block_channels) - log2(factor) blocks keep the input resolution
    (SynthesisBlockNoUp), each later one doubles it. input 64, widths [128, 64], image 128 has
    exactly SuperresolutionHybrid2X's blocks."""

    def __init__(self,
        channels,                       # Channels of the feature image (the decoder's output).
        img_resolution,                 # Output resolution.
        sr_num_fp16_res,                # > 0: every block in fp16 (CUDA) with conv_clamp 256.
        sr_antialias,                   # Antialias the resize to the input resolution?
        input_resolution    = None,     # Resolution the inputs are resized to; None = img_resolution // 2.
        block_channels      = (128, 64),# Output channels of each block (at least log2(factor) entries).
        num_fp16_res        = 4,        # Ignored (upstream's train.py passes it to every SR module).
        conv_clamp          = None,     # Ignored.
        channel_base        = None,     # Ignored.
        channel_max         = None,     # Ignored.
        w_dim               = 512,      # Intermediate latent (W) dimensionality.
        **block_kwargs,                 # Extra SynthesisBlock arguments (fused_modconv_default).
    ):
        super().__init__()
        if input_resolution is None:
            input_resolution = img_resolution // 2
        factor = img_resolution // max(int(input_resolution), 1)
        if input_resolution < 4 or factor * input_resolution != img_resolution or factor & (factor - 1) != 0:
            raise ValueError(f'SuperresolutionGeneric: img_resolution ({img_resolution}) must be the input_resolution '
                             f'({input_resolution}, >= 4) times a power of two')
        block_channels = [int(ch) for ch in block_channels]
        n_up = int(np.log2(factor))
        if len(block_channels) < max(n_up, 1) or min(block_channels) <= 0:
            raise ValueError(f'SuperresolutionGeneric: block_channels {block_channels} needs at least '
                             f'{max(n_up, 1)} positive entries for {input_resolution} -> {img_resolution}')
        self.img_resolution = img_resolution
        self.input_resolution = int(input_resolution)
        self.sr_antialias = sr_antialias
        self._make_blocks(channels, block_channels, self.input_resolution, img_resolution, w_dim,
                          sr_num_fp16_res > 0, block_kwargs)
