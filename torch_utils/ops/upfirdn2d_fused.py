"""The fused upfirdn2d: an autograd Function around the compiled kernels (upfirdn2d_kernels.cu).

upfirdn2d is linear in x, and its adjoint is again an upfirdn2d: up and down swapped, the filter
flipped, the padding chosen so that the output has the input's size. The backward therefore calls the
same Function, which makes the fused path differentiable to any order.
"""

from __future__ import annotations

import contextlib

import torch

from . import _impl
from .upfirdn2d import _parse_padding, _parse_scaling

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
MAX_UP, MAX_DOWN, MAX_TAPS = 8, 16, 64  # As upfirdn2d.h.


class _Config:
    """One direction of the op: resampling, padding, and the filter in the kernel's form."""

    def __init__(self, module, f: torch.Tensor, up, down, padding, flip_filter: bool, gain: float):
        self.module, self.f, self.flip_filter, self.gain = module, f, flip_filter, gain
        self.up, self.down, self.padding = up, down, padding

    def taps(self, dtype: torch.dtype) -> torch.Tensor:
        """The filter as the kernel reads it: correlation order, gain applied, arithmetic dtype."""
        f = self.f * (self.gain ** (self.f.ndim / 2))
        if not self.flip_filter:
            f = f.flip(list(range(f.ndim)))
        return f.to(torch.float64 if dtype == torch.float64 else torch.float32).contiguous()

    def out_size(self, in_h: int, in_w: int) -> tuple[int, int]:
        (upx, upy), (downx, downy), (x0, x1, y0, y1) = self.up, self.down, self.padding
        kw, kh = self.f.shape[-1], self.f.shape[0]
        mw, mh = in_w * upx + x0 + x1 - kw + 1, in_h * upy + y0 + y1 - kh + 1
        return (mh + downy - 1) // downy, (mw + downx - 1) // downx

    def adjoint(self, in_h: int, in_w: int) -> '_Config':
        """The op whose output is the gradient with respect to an [in_h, in_w] input."""
        (upx, upy), (downx, downy), (x0, _, y0, _) = self.up, self.down, self.padding
        kw, kh = self.f.shape[-1], self.f.shape[0]
        out_h, out_w = self.out_size(in_h, in_w)
        padding = (kw - 1 - x0, in_w * upx + x0 - out_w * downx, kh - 1 - y0, in_h * upy + y0 - out_h * downy)
        return _Config(self.module, self.f, self.down, self.up, padding, not self.flip_filter, self.gain)

    def launch(self, x: torch.Tensor) -> torch.Tensor:
        n, c, in_h, in_w = x.shape
        (upx, upy), (x0, x1, y0, y1), kw, kh = self.up, self.padding, self.f.shape[-1], self.f.shape[0]
        ph, pw = in_h * upy + y0 + y1, in_w * upx + x0 + x1
        if ph < kh or pw < kw:  # As the reference path says it.
            raise ValueError(f'upfirdn2d: the upsampled and padded input ({ph}x{pw}) is smaller than the filter '
                             f'({kh}x{kw})')
        out_h, out_w = self.out_size(in_h, in_w)
        y = torch.empty([n, c, out_h, out_w], dtype=x.dtype, device=x.device)
        taps = self.taps(x.dtype).to(x.device)
        threads, emulate = _impl.host_exec()
        (upx, upy), (downx, downy), (x0, _, y0, _) = self.up, self.down, self.padding
        with _impl.device_guard(x), _too_large_is_unsupported():
            self.module.upfirdn2d(x.data_ptr(), y.data_ptr(), taps.data_ptr(), n * c, c, *x.stride(), in_w, in_h,
                                  out_w, out_h, upx, upy, downx, downy, x0, y0, self.f.shape[-1], self.f.shape[0],
                                  int(self.f.ndim == 1), DTYPES[x.dtype], _impl.stream_of(x), threads, emulate)
        return y


@contextlib.contextmanager
def _too_large_is_unsupported():
    """A filter whose tile does not fit the kernel's buffers (large 2-D filters, double on CUDA): the
    reference path serves instead."""
    try:
        yield
    except RuntimeError as e:
        if 'too large for the kernel' in str(e):
            raise _impl.Unsupported('filters this large for this dtype and device') from None
        raise


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cfg):
        ctx.cfg, ctx.in_size = cfg, x.shape[2:]
        return cfg.launch(x)

    @staticmethod
    def backward(ctx, dy):
        return _Upfirdn2d.apply(dy.contiguous(), ctx.cfg.adjoint(*ctx.in_size)), None


class Plugin:
    """The fused upfirdn2d of one device (what _impl.fused_plugin returns)."""

    def __init__(self, module):
        self.module = module

    def upfirdn2d(self, x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter=False,
                  gain=1) -> torch.Tensor:
        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
            raise ValueError(f'upfirdn2d: filter must be a 1-D or 2-D tensor, got '
                             f'{list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}')
        up, down, padding = _parse_scaling(up), _parse_scaling(down), _parse_padding(padding)
        if x.dtype not in DTYPES:
            raise _impl.Unsupported(f'dtype {x.dtype}')
        if f.requires_grad and torch.is_grad_enabled():
            raise _impl.Unsupported('gradients with respect to the filter')
        # Causes name the limit, not the value, so that each is said once.
        if max(up) > MAX_UP:
            raise _impl.Unsupported(f'up factors above {MAX_UP}')
        if max(down) > MAX_DOWN:
            raise _impl.Unsupported(f'down factors above {MAX_DOWN}')
        if max(f.shape) > MAX_TAPS:
            raise _impl.Unsupported(f'filters longer than {MAX_TAPS} taps')
        cfg = _Config(self.module, f.detach(), up, down, padding, bool(flip_filter), float(gain))
        # Any strides: the kernel reads channels-last input (a transposed convolution's output) in place.
        return _Upfirdn2d.apply(x, cfg)
