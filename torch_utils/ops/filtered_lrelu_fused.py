"""The fused filtered_lrelu: autograd Functions around the compiled kernels (filtered_lrelu_kernels.cu).

The forward is one pass: bias, up-FIR (gain up^2), leaky ReLU with gain and clamp, down-FIR; the upsampled
tensor exists only tile by tile inside the kernel. When a gradient will be needed the pass also writes the
derivative of the point-wise step at every upsampled sample as a bit-packed mask: 1 bit per sample (its
sign), 2 bits when a clamp is set (sign, or clamped). The mask is all the backward keeps (neither the input
nor the bias): the gradient is one pass of the same kernel over the op's adjoint (up and down swapped,
filters reversed), with the mask's derivative in place of the leaky ReLU.

With the mask fixed the op is linear, and that linear pass (_Linear) is differentiable again, its adjoint
being the same pass in the forward's geometry: gradients of any order with respect to the incoming
gradient. The mask's own dependence on x contributes nothing (leaky ReLU and clamp are piecewise linear),
as in the reference path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from . import _impl
from .upfirdn2d import _parse_padding, _parse_scaling

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
FORWARD, FORWARD_MASK, LINEAR = 0, 1, 2  # FlreluMode in filtered_lrelu.h.
MAX_UP, MAX_TAPS = 8, 64                 # As filtered_lrelu.h.


@dataclasses.dataclass(frozen=True)
class _Axis:
    """One axis of a pass (filtered_lrelu.h, FlreluAxis)."""
    n_in: int     # Input length.
    n_out: int    # Output length.
    up: int       # Stage 1: upsampling factor,
    pad: int      # its leading padding (after upsampling; negative crops),
    taps1: int    # and filter length.
    mid: int      # Intermediate (upsampled) length.
    down: int     # Stage 3: downsampling factor,
    offset: int   # the first intermediate sample output 0 reads,
    taps3: int    # and filter length.

    def adjoint(self) -> '_Axis':
        return _Axis(self.n_out, self.n_in, self.down, self.taps3 - 1 + self.offset, self.taps3, self.mid, self.up,
                     self.pad - self.taps1 + 1, self.taps1)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.n_in, self.n_out, self.up, self.pad, self.taps1, self.mid, self.down, self.offset, self.taps3)


class _Config:
    """One direction of the op: geometry, filters in correlation order (float64), leaky ReLU parameters."""

    def __init__(self, module, f1: torch.Tensor, f3: torch.Tensor, ax: _Axis, ay: _Axis, gain: float, slope: float,
                 clamp: float):
        self.module, self.f1, self.f3, self.ax, self.ay = module, f1, f3, ax, ay
        self.gain, self.slope, self.clamp = gain, slope, clamp
        self.mask_bits = 2 if clamp >= 0 else 1
        self._taps: dict = {}

    def adjoint(self) -> '_Config':
        def rev(f):
            return f.flip(list(range(f.ndim)))
        return _Config(self.module, rev(self.f3), rev(self.f1), self.ax.adjoint(), self.ay.adjoint(), self.gain,
                       self.slope, self.clamp)

    def taps(self, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Both filters in the kernel's arithmetic dtype on `device` (made once per dtype and device)."""
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        key = (acc, str(device))
        if key not in self._taps:
            self._taps[key] = tuple(f.to(device=device, dtype=acc).contiguous() for f in (self.f1, self.f3))
        return self._taps[key]

    def mask_shape(self, n: int, c: int) -> list[int]:
        return [n, c, self.ay.mid, (self.ax.mid * self.mask_bits + 7) // 8]

    def launch(self, x: torch.Tensor, b: torch.Tensor | None, mode: int, mask: torch.Tensor | None = None):
        """(output, mask): runs one pass over x [N, C, in_y, in_x]; FORWARD_MASK makes the mask."""
        n, c, h, w = x.shape
        assert (h, w) == (self.ay.n_in, self.ax.n_in), (x.shape, self.ay, self.ax)
        y = torch.empty([n, c, self.ay.n_out, self.ax.n_out], dtype=x.dtype, device=x.device)
        if mode == FORWARD_MASK:  # Zeros: samples no output reads keep code 0.
            mask = torch.zeros(self.mask_shape(n, c), dtype=torch.uint8, device=x.device)
        f1, f3 = self.taps(x.dtype, x.device)
        if b is not None:
            b = b.to(dtype=f1.dtype).contiguous()
        threads, emulate = _impl.host_exec()
        ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
        with _impl.device_guard(x), _too_large_is_unsupported():
            self.module.filtered_lrelu(x.data_ptr(), y.data_ptr(), ptr(b), f1.data_ptr(), f3.data_ptr(), ptr(mask),
                                       n * c, c, self.mask_shape(n, c)[-1], int(f1.ndim == 1), int(f3.ndim == 1),
                                       mode, self.mask_bits, self.gain, self.slope, self.clamp, DTYPES[x.dtype],
                                       self.ax.as_tuple(), self.ay.as_tuple(), _impl.stream_of(x), threads, emulate)
        return y, mask


@contextlib.contextmanager
def _too_large_is_unsupported():
    """Filters whose tiles do not fit the kernel's buffers: the reference path serves instead."""
    try:
        yield
    except RuntimeError as e:
        if 'too large for the kernel' in str(e):
            raise _impl.Unsupported('filters this large for this dtype and device') from None
        raise


class _FilteredLRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg, needs_mask):
        y, mask = cfg.launch(x, b, FORWARD_MASK if needs_mask else FORWARD)
        ctx.cfg, ctx.b_dtype = cfg, None if b is None else b.dtype
        if needs_mask:
            ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        dx = _Linear.apply(dy.contiguous(), mask, ctx.cfg.adjoint())
        db = None
        if ctx.needs_input_grad[1]:
            acc = torch.float64 if dx.dtype == torch.float64 else torch.float32
            db = dx.sum([0, 2, 3], dtype=acc).to(ctx.b_dtype)
        return dx if ctx.needs_input_grad[0] else None, db, None, None


class _Linear(torch.autograd.Function):
    """t -> stage 3 (the mask's derivative * stage 1 (t)): the op linearised where the mask was made."""

    @staticmethod
    def forward(ctx, t, mask, cfg):
        ctx.save_for_backward(mask)
        ctx.cfg = cfg
        return cfg.launch(t, None, LINEAR, mask)[0]

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return _Linear.apply(g.contiguous(), mask, ctx.cfg.adjoint()), None, None


def _filter(f: torch.Tensor | None, what: str) -> torch.Tensor:
    if f is None:
        return torch.ones([1], dtype=torch.float64)
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError(f'filtered_lrelu: {what} must be a 1-D or 2-D tensor, got '
                         f'{list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}')
    return f.detach().to(torch.float64)


class Plugin:
    """The fused filtered_lrelu of one device (what _impl.fused_plugin returns)."""

    def __init__(self, module):
        self.module = module

    def filtered_lrelu(self, x: torch.Tensor, fu=None, fd=None, b=None, up=1, down=1, padding=0,
                       gain=math.sqrt(2), slope=0.2, clamp=None, flip_filter=False) -> torch.Tensor:
        up, down = _parse_scaling(up)[0], _parse_scaling(down)[0]
        px0, px1, py0, py1 = _parse_padding(padding)
        n, c, h, w = x.shape
        if b is not None:
            if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != c:
                raise ValueError(f'filtered_lrelu: bias of shape {list(getattr(b, "shape", []))} does not match the '
                                 f'{c} channels of x {list(x.shape)}')
            if b.device != x.device:
                raise ValueError(f'filtered_lrelu: bias on {b.device}, x on {x.device}')
        if x.dtype not in DTYPES:
            raise _impl.Unsupported(f'dtype {x.dtype}')
        if torch.is_grad_enabled() and any(isinstance(f, torch.Tensor) and f.requires_grad for f in (fu, fd)):
            raise _impl.Unsupported('gradients with respect to the filters')
        g1, g3 = _filter(fu, 'fu'), _filter(fd, 'fd')
        # Causes name the limit, not the value, so that each is said once.
        if max(up, down) > MAX_UP:
            raise _impl.Unsupported(f'up or down factors above {MAX_UP}')
        if max(g1.shape + g3.shape) > MAX_TAPS:
            raise _impl.Unsupported(f'filters longer than {MAX_TAPS} taps')

        # Sizes, and the reference path's errors for inputs too small for the filters.
        (k1x, k1y), (k3x, k3y) = (g1.shape[-1], g1.shape[0]), (g3.shape[-1], g3.shape[0])
        ph, pw = h * up + py0 + py1, w * up + px0 + px1
        if ph < k1y or pw < k1x:
            raise ValueError(f'upfirdn2d: the upsampled and padded input ({ph}x{pw}) is smaller than the filter '
                             f'({k1y}x{k1x})')
        mid_y, mid_x = ph - k1y + 1, pw - k1x + 1
        if mid_y < k3y or mid_x < k3x:
            raise ValueError(f'upfirdn2d: the upsampled and padded input ({mid_y}x{mid_x}) is smaller than the '
                             f'filter ({k3y}x{k3x})')
        out_y, out_x = (mid_y - k3y) // down + 1, (mid_x - k3x) // down + 1

        # Correlation order (the reference convolves unless flip_filter), fu's gain up^2 over its dimensions.
        if not flip_filter:
            g1, g3 = g1.flip(list(range(g1.ndim))), g3.flip(list(range(g3.ndim)))
        g1 = g1 * float(up ** 2) ** (g1.ndim / 2)
        ax = _Axis(w, out_x, up, px0, k1x, mid_x, down, 0, k3x)
        ay = _Axis(h, out_y, up, py0, k1y, mid_y, down, 0, k3y)
        clamp = float(clamp) if clamp is not None else -1.0
        cfg = _Config(self.module, g1, g3, ax, ay, float(gain), float(slope), clamp)
        # The mask only when a backward can follow (needs_input_grad ignores no_grad mode).
        needs_mask = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
        return _FilteredLRelu.apply(x.contiguous(), b, cfg, needs_mask)
