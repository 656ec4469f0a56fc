"""2-D convolution with optional FIR upsampling or downsampling, as StyleGAN2's layers use it.

Defined as: upfirdn2d(x, f, up, padding', gain=up^2) -> conv2d(w) -> upfirdn2d(f, down), where
padding' is `padding` widened so that the filter keeps the image aligned. The paths below compute the
same thing with less work (the transposed convolution never multiplies the inserted zeros).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from . import render_ops_fused, winograd
from .upfirdn2d import _get_filter_size, _parse_padding, upfirdn2d


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding=0, groups: int = 1,
          flip_weight: bool = True) -> torch.Tensor:
    """conv2d; flip_weight=True is torch's correlation, False a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


# On the CPU, torch's transposed convolution of a contiguous (NCHW) image computes in channels-last and
# copies its output back; given a channels-last weight it returns that output as it is, and the fused
# upfirdn2d reads it in place. Without gradients only (with them, the backward through channels-last
# tensors costs more than the copy saves: ffhq512 Gmain 8.9 -> 11.3 s), and where it was measured to pay
# (2 threads, batch 1, transposed convolution + FIR): inputs of at least 256^2 pixels (256 -> 128 channels
# at 256^2: 367 -> 321 ms; at 128^2 it loses, 70 -> 131 ms), or layers that widen the channels at least
# 4x (the 8XDC super-resolution's first layer, 32 -> 256 channels at 128^2: 120 -> 77 ms), and grouped ones
# (the fused modulated convolution of a batch: at batch 4, 16.0 -> 8.3 ms for 32 -> 16 channels at 128^2,
# 24.8 -> 19.0 ms for 128 -> 64 at 64^2; the small G forward 262 -> 252 ms). A minimum of 0 pixels turns it off.
CHANNELS_LAST_TRANSPOSE_MIN_PIXELS = 256 * 256
CHANNELS_LAST_TRANSPOSE_MIN_WIDENING = 4
CHANNELS_LAST_TRANSPOSE_GROUPED = True


def _channels_last_transpose(x: torch.Tensor, wt: torch.Tensor, groups: int) -> bool:
    """wt: the transposed convolution's weight [C_in, C_out, kh, kw]."""
    if x.device.type != 'cpu' or CHANNELS_LAST_TRANSPOSE_MIN_PIXELS <= 0 \
            or (torch.is_grad_enabled() and (x.requires_grad or wt.requires_grad)):
        return False
    if groups > 1:
        return CHANNELS_LAST_TRANSPOSE_GROUPED
    return (x.shape[2] * x.shape[3] >= CHANNELS_LAST_TRANSPOSE_MIN_PIXELS
            or wt.shape[1] >= CHANNELS_LAST_TRANSPOSE_MIN_WIDENING * wt.shape[0])


_fir4_cache: dict[int, tuple] = {}  # id(filter) -> (weak reference, (version, flip, gain), taps).


def _fir4_taps(f: torch.Tensor, flip_filter: bool, gain: float) -> tuple[list[float], list[float]] | None:
    """(fx, fy) correlation taps of upfirdn2d's filter f (gain in fy) when it is a separable 4 x 4 (or 1-D
    4-tap) filter, else None. Remembered per filter tensor (a layer's buffer) and version."""
    if f.shape not in ((4,), (4, 4)):
        return None
    key = (f._version, bool(flip_filter), float(gain))
    cached = _fir4_cache.get(id(f))  # (weak reference to f, key, taps); the reference guards against id reuse.
    if cached is None or cached[0]() is not f or cached[1] != key:
        if len(_fir4_cache) > 256:
            _fir4_cache.clear()
        cached = (weakref.ref(f), key, _separable_taps(f, flip_filter, gain))
        _fir4_cache[id(f)] = cached
    return cached[2]


def _separable_taps(f: torch.Tensor, flip_filter: bool, gain: float) -> tuple[list[float], list[float]] | None:
    g = f.detach().to('cpu', torch.float64)
    if not flip_filter:  # upfirdn2d convolves (flips the taps) unless asked to correlate.
        g = g.flip(list(range(g.ndim)))
    if g.ndim == 1:
        return g.tolist(), (g * gain).tolist()
    fy, fx = g.sum(1), g.sum(0)
    total = g.sum()
    if total == 0 or not torch.allclose(torch.outer(fy, fx) / total, g, rtol=1e-6, atol=1e-9):
        return None
    return fx.tolist(), (fy / total * gain).tolist()


def _fir4_padding_ok(pad: tuple[int, int, int, int]) -> bool:
    x0, x1, y0, y1 = pad
    return 0 <= x0 <= 3 and 0 <= y0 <= 3 and x1 <= 3 and y1 <= 3


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding=0, groups: int = 1, flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """Convolve x [N, C_in, H, W] with w [C_out, C_in/groups, kh, kw], resampling by `up` or `down`.

    f: the FIR filter (from upfirdn2d.setup_filter), required when up or down > 1. padding: int,
    [px, py] or [x0, x1, y0, y1], in the upsampled image's pixels. flip_weight=True correlates
    (torch's conv2d); StyleGAN2 passes flip_weight = (up == 1).
    """
    if x.ndim != 4 or w.ndim != 4 or x.dtype != w.dtype:
        raise ValueError(f'conv2d_resample: expected 4-D x and w of one dtype, got x {list(x.shape)} {x.dtype}, '
                         f'w {list(w.shape)} {w.dtype}')
    if (up > 1 or down > 1) and f is None:
        raise ValueError('conv2d_resample: a filter f is required when up or down > 1')
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f'conv2d_resample: up and down must be ints >= 1, got {up}, {down}')
    out_ch, in_ch_per_group, kh, kw = w.shape
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Widen the padding so that the FIR filter is centred (as upsample2d / downsample2d do).
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    # 1x1 kernels commute with spatial filtering: resample on the side with fewer pixels.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter, then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a transposed convolution with stride `up` equals a convolution over the zero-inserted
    # image, without multiplying the zeros. Its output starts kw - 1 pixels before the padded
    # correlation's and ends kw - up pixels after it, hence the padding shifts below.
    if up > 1:
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_ch_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_ch_per_group, out_ch // groups, kh, kw)
        if flip_weight:  # conv_transpose2d convolves; correlation needs the flipped kernel.
            wt = wt.flip([2, 3])
        px0, px1 = px0 - (kw - 1), px1 - (kw - up)
        py0, py1 = py0 - (kh - 1), py1 - (kh - up)
        cx = max(min(-px0, -px1), 0)  # Crop shared by both sides: done inside conv_transpose2d.
        cy = max(min(-py0, -py1), 0)
        channels_last = _channels_last_transpose(x, wt, groups)
        if channels_last:
            wt = wt.contiguous(memory_format=torch.channels_last)
        x = F.conv_transpose2d(x, wt, stride=up, padding=[cy, cx], groups=groups)
        pad = (px0 + cx, px1 + cx, py0 + cy, py1 + cy)
        # Under no_grad only (not merely when nothing requires grad), so that which parameters are frozen
        # does not change the result's last bits.
        taps = _fir4_taps(f, flip_filter, up ** 2) \
            if channels_last and x.stride(1) == 1 and not torch.is_grad_enabled() else None
        plugin = render_ops_fused.host_plugin(x) if taps is not None and _fir4_padding_ok(pad) else None
        if plugin is not None:  # The channels-last output filtered channels-last, written NCHW.
            x = plugin.fir4_nhwc(x, taps[0], taps[1], pad)
        else:
            x = upfirdn2d(x, f, padding=list(pad), gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling. 3x3 with padding 1 on the CPU: Winograd F(4x4, 3x3) where it pays (winograd.applicable).
    if (kh, kw, px0, px1, py0, py1, groups) == (3, 3, 1, 1, 1, 1, 1) and winograd.applicable(x, w):
        return winograd.conv3x3(x, w if flip_weight else w.flip([2, 3]))
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
