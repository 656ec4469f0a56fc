"""Upsample, FIR filter, downsample: the resampling op of StyleGAN2/3 and EG3D.

Per channel: insert `up - 1` zeros after every pixel, pad (negative padding crops), convolve with the
filter `f`, keep every `down`-th pixel. A 1-D filter is applied separably along x then y; a 2-D
filter directly. flip_filter=False is a true convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _impl

last_impl: str | None = None  # Which implementation served the last call: 'ref' or 'fused'.


def _parse_scaling(scaling) -> tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f'upfirdn2d: up/down factors must be >= 1, got {scaling}')
    return sx, sy


def _parse_padding(padding) -> tuple[int, int, int, int]:
    """int -> all sides; [px, py]; or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f'upfirdn2d: padding must be an int, [px, py] or [x0, x1, y0, y1], got {padding}')
    return tuple(padding)


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f'upfirdn2d: filter must be 1-D or 2-D, got shape {list(f.shape)}')
    return (f.shape[-1], f.shape[0])


def setup_filter(f, device=torch.device('cpu'), normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: bool | None = None) -> torch.Tensor:
    """A float32 filter tensor for upfirdn2d.

    f: taps as a list or tensor (None means [1]). A 1-D filter becomes its 2-D outer product unless
    `separable` (None: separable when it has 8 or more taps). normalize scales the taps to sum 1;
    gain scales the whole (separable) filter by `gain`.
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f'setup_filter: expected 0-, 1- or 2-D taps, got shape {list(f.shape)}')
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError('setup_filter: a 2-D filter cannot be separable')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Upsample by `up`, pad by `padding`, convolve with `f` (scaled by `gain`), downsample by `down`.

    x: [N, C, H, W]. f: 1-D (separable) or 2-D float32 taps, or None for identity. up, down: int or
    [x, y]. padding: int, [px, py] or [x0, x1, y0, y1]; applied after upsampling.
    """
    global last_impl
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'upfirdn2d: x must be a 4-D tensor [N, C, H, W], got '
                         f'{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    # On the host, a 1-D (separable) filter runs faster as the reference path's two depthwise
    # convolutions than in the host build's separable kernel (3-10x at 8-61 taps, e.g. the loss's
    # 61-tap blur: 30 ms against 6.4 ms for 4 x 3 x 128^2), so 'auto' takes the reference there.
    if impl == 'auto' and x.device.type == 'cpu' and f is not None and f.ndim == 1:
        impl = 'ref'
    if _impl.resolve('upfirdn2d', impl, x.device) == 'fused':
        try:
            y = _impl.fused_plugin('upfirdn2d', x.device).upfirdn2d(x, f, up=up, down=down, padding=padding,
                                                                    flip_filter=flip_filter, gain=gain)
            last_impl = 'fused'
            return y
        except _impl.Unsupported as e:
            if impl == 'fused':
                raise ValueError(f"upfirdn2d: impl='fused' cannot serve this call ({e})") from None
            _impl.warn_once('upfirdn2d', f'the fused kernel does not support {e}')
    last_impl = 'ref'
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
                  flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """The reference path: zero insertion, padding, depthwise conv2d, strided slicing."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    x0, x1, y0, y1 = _parse_padding(padding)
    n, c, h, w = x.shape

    # Zero insertion: each pixel followed by up-1 zeros along each axis.
    if upx > 1 or upy > 1:
        x = x.reshape([n, c, h, 1, w, 1])
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([n, c, h * upy, w * upx])

    # Padding; negative values crop.
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]

    fw, fh = _get_filter_size(f)
    if x.shape[2] < fh or x.shape[3] < fw:
        raise ValueError(f'upfirdn2d: the upsampled and padded input ({x.shape[2]}x{x.shape[3]}) is smaller than '
                         f'the filter ({fh}x{fw})')

    # Convolution (conv2d correlates, so flip the taps unless flip_filter asks for correlation).
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        taps = f[None, None].expand(c, 1, f.shape[0])
        x = F.conv2d(x, taps.unsqueeze(2), groups=c)  # Along x.
        x = F.conv2d(x, taps.unsqueeze(3), groups=c)  # Along y.

    # Decimation.
    return x[:, :, ::downy, ::downx]


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding=0, flip_filter: bool = False, gain: float = 1,
             impl: str = 'auto') -> torch.Tensor:
    """Filter with `f` keeping the size (plus `padding`)."""
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up=2, padding=0, flip_filter: bool = False,
               gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Upsample by `up` with interpolation filter `f`; the output is `up` times larger (plus padding)."""
    upx, upy = _parse_scaling(up)
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down=2, padding=0, flip_filter: bool = False,
                 gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Low-pass with `f` and downsample by `down`; the output is `down` times smaller (plus padding)."""
    downx, downy = _parse_scaling(down)
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
