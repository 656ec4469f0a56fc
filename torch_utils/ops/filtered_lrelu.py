"""StyleGAN3's filtered leaky ReLU: bias, FIR upsampling, leaky ReLU with gain and clamp, FIR downsampling.

The nonlinearity runs at the higher sampling rate so that the harmonics it creates can be removed by
the low-pass filter `fd` before decimation (StyleGAN3, Sec. 3.2).

impl='auto' takes the fused kernel (filtered_lrelu_fused.py) where it is built: one pass without the
upsampled tensor, and a backward that keeps a bit-packed mask of the point-wise derivative instead of it.
"""

from __future__ import annotations

import math

import torch

from . import _impl
from .bias_act import bias_act_ref
from .upfirdn2d import _get_filter_size, _parse_padding, _parse_scaling, upfirdn2d_ref

last_impl: str | None = None  # Which implementation served the last call: 'ref' or 'fused'.


def output_size(in_size: tuple[int, int], fu, fd, up: int, down: int, padding) -> tuple[int, int]:
    """(height, width) of filtered_lrelu's output for an input of (height, width)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fu_w, fu_h = _get_filter_size(fu)
    fd_w, fd_h = _get_filter_size(fd)
    h, w = in_size
    out_w = (w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_h, out_w


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0, gain: float = math.sqrt(2),
                   slope: float = 0.2, clamp: float | None = None, flip_filter: bool = False,
                   impl: str = 'auto') -> torch.Tensor:
    """x [N, C, H, W] -> add bias b [C] -> upfirdn2d(fu, up, padding, gain up^2) -> lrelu(slope) * gain,
    clamped to +-clamp -> upfirdn2d(fd, down). fu, fd: 1-D or 2-D filters, or None for identity."""
    global last_impl
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('filtered_lrelu: x must be a 4-D tensor [N, C, H, W]')
    if _impl.resolve('filtered_lrelu', impl, x.device) == 'fused':
        try:
            y = _impl.fused_plugin('filtered_lrelu', x.device).filtered_lrelu(
                x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                flip_filter=flip_filter)
            last_impl = 'fused'
            return y
        except _impl.Unsupported as e:
            if impl == 'fused':
                raise ValueError(f"filtered_lrelu: impl='fused' cannot serve this call ({e})") from None
            _impl.warn_once('filtered_lrelu', f'the fused kernel does not support {e}')
    last_impl = 'ref'
    return filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                              slope=slope, clamp=clamp, flip_filter=flip_filter)


def filtered_lrelu_ref(x: torch.Tensor, fu=None, fd=None, b=None, up: int = 1, down: int = 1, padding=0,
                       gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                       flip_filter: bool = False) -> torch.Tensor:
    """The reference path, as a sequence of the other reference ops."""
    up, _ = _parse_scaling(up)
    down, _ = _parse_scaling(down)
    if b is not None:
        x = bias_act_ref(x, b)
    out_h, out_w = output_size(x.shape[2:], fu, fd, up, down, padding)
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up ** 2)
    x = bias_act_ref(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)
    assert x.shape[2:] == (out_h, out_w), (x.shape, out_h, out_w)
    return x
