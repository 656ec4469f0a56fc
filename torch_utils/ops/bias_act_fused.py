"""The fused bias_act: autograd Functions around the compiled kernels (bias_act_kernels.cu).

Differentiable to second order: the gradient is itself a kernel whose derivative with respect to the
incoming gradient is the same kernel, and whose derivative with respect to the saved reference (the
output y, or x for swish) is a third kernel (bias_act.h, modes). Third order raises.
"""

from __future__ import annotations

import math

import torch

from . import _impl
from .bias_act import activation_funcs, resolve_args

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
FORWARD, GRAD, GRAD2 = 0, 1, 2


class _Config:
    """What the kernels of one call need besides tensors."""

    def __init__(self, module, act: str, alpha: float, gain: float, clamp: float, dim: int, has_bias: bool,
                 shape: torch.Size):
        self.module, self.spec = module, activation_funcs[act]
        self.alpha, self.gain, self.clamp, self.dim = alpha, gain, clamp, dim
        if has_bias:
            self.rows, self.inner, self.channels = math.prod(shape[:dim + 1]), math.prod(shape[dim + 1:]), shape[dim]
        else:
            self.rows, self.inner, self.channels = 1, math.prod(shape), 1
        self.sum_dims = [i for i in range(len(shape)) if i != dim]

    def launch(self, mode: int, like: torch.Tensor, x=None, b=None, y=None, dy=None, dd=None) -> torch.Tensor:
        out = torch.empty_like(like, memory_format=torch.contiguous_format)
        threads, emulate = _impl.host_exec()
        ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
        with _impl.device_guard(like):
            self.module.bias_act(ptr(x), ptr(b), ptr(y), ptr(dy), ptr(dd), out.data_ptr(), self.rows, self.inner,
                                 self.channels, self.alpha, self.gain, self.clamp, self.spec.cuda_idx, mode,
                                 DTYPES[like.dtype], _impl.stream_of(like), threads, emulate)
        return out

    def bias_grad(self, dx: torch.Tensor) -> torch.Tensor:
        return dx.sum(self.sum_dims)


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        y = cfg.launch(FORWARD, x, x=x, b=b)
        ref_x = cfg.spec.ref == 'x'
        keep_y = cfg.spec.ref == 'y' or cfg.clamp >= 0  # y also tells where the clamp saturated.
        ctx.save_for_backward(x if ref_x else None, b if ref_x else None, y if keep_y else None)
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b, y = ctx.saved_tensors
        dx = _BiasActGrad.apply(dy.contiguous(), x, b, y, ctx.cfg)
        db = ctx.cfg.bias_grad(dx) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * d(out)/dz; linear in dy."""

    @staticmethod
    def forward(ctx, dy, x, b, y, cfg):
        ctx.save_for_backward(dy, x, b, y)
        ctx.cfg = cfg
        return cfg.launch(GRAD, dy, x=x, b=b, y=y, dy=dy)

    @staticmethod
    def backward(ctx, d_dx):
        dy, x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        d_dx = d_dx.contiguous()
        d_dy = _BiasActGrad.apply(d_dx, x, b, y, cfg) if ctx.needs_input_grad[0] else None
        d_x = d_b = d_y = None
        if cfg.spec.has_2nd_grad and any(ctx.needs_input_grad[1:4]):
            t = _BiasActGrad2.apply(d_dx, dy, x, b, y, cfg)
            if cfg.spec.ref == 'x':
                d_x = t
                d_b = cfg.bias_grad(t) if ctx.needs_input_grad[2] else None
            else:
                d_y = t
        return d_dy, d_x, d_b, d_y, None


class _BiasActGrad2(torch.autograd.Function):
    """d_dx * dy * d(d(out)/dz)/d(ref): the second-order term (not differentiable again)."""

    @staticmethod
    def forward(ctx, d_dx, dy, x, b, y, cfg):
        return cfg.launch(GRAD2, d_dx, x=x, b=b, y=y, dy=d_dx, dd=dy)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("bias_act: the fused path is differentiable to second order only; use impl='ref'")


class Plugin:
    """The fused bias_act of one device (what _impl.fused_plugin returns)."""

    def __init__(self, module):
        self.module = module

    def bias_act(self, x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
                 alpha=None, gain=None, clamp=None) -> torch.Tensor:
        spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
        if b is not None:
            if b.ndim != 1 or not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
                raise ValueError(f'bias_act: bias of shape {list(b.shape)} does not match dimension {dim} of '
                                 f'x with shape {list(x.shape)}')
            if b.device != x.device:
                raise ValueError(f'bias_act: bias on {b.device}, x on {x.device}')
        if x.dtype not in DTYPES:
            raise _impl.Unsupported(f'dtype {x.dtype}')
        if gain == 0 or not math.isfinite(gain):
            raise _impl.Unsupported(f'gain {gain}')
        if act == 'lrelu' and alpha < 0:
            raise _impl.Unsupported('a negative lrelu slope')
        if b is not None:
            b = b.to(x.dtype).contiguous()
        # channels_last: work on the NHWC view, where it is contiguous, and hand back the same layout.
        if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            perm, dim = (0, 2, 3, 1), (0, 3, 1, 2)[dim] if b is not None else dim
            y = self._apply(x.permute(*perm), b, dim, act, alpha, gain, clamp)
            return y.permute(0, 3, 1, 2)
        return self._apply(x.contiguous(), b, dim, act, alpha, gain, clamp)

    def _apply(self, x, b, dim, act, alpha, gain, clamp):
        cfg = _Config(self.module, act, alpha, gain, clamp, dim, b is not None, x.shape)
        return _BiasAct.apply(x, b, cfg)
