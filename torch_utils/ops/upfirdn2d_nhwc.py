"""2x upsampling of a channels-last (NHWC) image with a separable, symmetric 4-tap filter, as
upfirdn2d.upsample2d(x, f) computes it, keeping the channels-last layout.

With f = outer(g, g), g = [a, b, b, a] normalised (a + b = 1/2) and upsample2d's padding (2 before,
1 after, gain 4), each axis is polyphase (StyleGAN2's [1, 3, 3, 1] filter: t = 2a = 1/4):

    out[2i]     = (1 - t) x[i] + t x[i-1]        out[2i + 1] = (1 - t) x[i] + t x[i+1]

with zeros outside the image. On an NHWC tensor both axes are passes over rows of C contiguous floats
(torch.lerp into strided output views; for t = 1/4, torch's one-pass channels-last bilinear kernel and an
edge correction), and the result is channels-last again: the tri-plane backbone's 96-channel skip image
stays in the layout the renderer's plane gather reads, instead of being transposed there (and back in
the backward).

The adjoint (the backward) is, per axis, gx[i] = (1 - t)(g[2i] + g[2i+1]) + t (g[2i-1] + g[2i+2]).
Forward and adjoint call each other in their backward passes, so the op is differentiable to any order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def polyphase_weight(f: torch.Tensor | None) -> float | None:
    """t = 2a when f (upfirdn2d.setup_filter's form, 1-D or 2-D) is a normalised symmetric 4-tap filter
    [a, b, b, a] (2-D: its outer product), else None (upsample2d must serve)."""
    if f is None or f.shape[-1] != 4 or f.ndim not in (1, 2) or (f.ndim == 2 and f.shape[0] != 4):
        return None
    g = f.detach().to('cpu', torch.float64)
    g1 = g if g.ndim == 1 else g.sum(0)
    if g.ndim == 2 and not torch.allclose(torch.outer(g1, g1), g, rtol=1e-6, atol=1e-9):
        return None
    a, b, b2, a2 = g1.tolist()
    if abs(a - a2) > 1e-7 or abs(b - b2) > 1e-7 or abs(a + b - 0.5) > 1e-6:
        return None
    return 2 * a


def is_nhwc(x: torch.Tensor) -> bool:
    """x [N, C, H, W] stored channels-last (C innermost and dense), and not also plain contiguous."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _up_axis(x: torch.Tensor, t: float) -> torch.Tensor:
    """[B, L, R] -> [B, 2L, R] along the middle axis (R: the rows after it, contiguous)."""
    b, n, r = x.shape
    y = x.new_empty([b, n, 2, r])
    if n > 1:
        torch.lerp(x[:, 1:], x[:, :-1], t, out=y[:, 1:, 0])
        torch.lerp(x[:, :-1], x[:, 1:], t, out=y[:, :-1, 1])
    torch.mul(x[:, 0], 1 - t, out=y[:, 0, 0])
    torch.mul(x[:, -1], 1 - t, out=y[:, -1, 1])
    return y.view(b, 2 * n, r)


def _down_axis(g: torch.Tensor, t: float) -> torch.Tensor:
    """The adjoint of _up_axis: [B, 2L, R] -> [B, L, R]."""
    b, n2, r = g.shape
    g = g.view(b, n2 // 2, 2, r)
    even, odd = g[:, :, 0], g[:, :, 1]
    y = torch.add(even, odd).mul_(1 - t)
    if n2 > 2:
        y[:, 1:].add_(odd[:, :-1], alpha=t)
        y[:, :-1].add_(even[:, 1:], alpha=t)
    return y


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> its NHWC storage as [N, H, W, C] (a copy only when x is not channels-last)."""
    return x.permute(0, 2, 3, 1).contiguous()


def _up(x: torch.Tensor, t: float) -> torch.Tensor:
    n, c, h, w = x.shape
    if t == 0.25:
        # The same taps as bilinear interpolation (align_corners=False: out[2i] samples x at i - 1/4),
        # whose channels-last CPU kernel is one pass; it repeats the edge where we pad with zeros, so
        # the outer rows and columns, which lack one neighbour, are scaled by 3/4 afterwards.
        y = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(2 * h, 2 * w), mode='bilinear',
                          align_corners=False).contiguous(memory_format=torch.channels_last)  # 1x1 inputs.
        for edge in (y[:, :, :, 0], y[:, :, :, -1], y[:, :, 0, :], y[:, :, -1, :]):
            edge.mul_(1 - t)
        return y
    y = _up_axis(_rows(x).view(n * h, w, c), t)                  # Along W: [N*H, 2W, C].
    y = _up_axis(y.view(n, h, 2 * w * c), t)                     # Along H: [N, 2H, 2W*C].
    return y.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


def _down(g: torch.Tensor, t: float) -> torch.Tensor:
    n, c, h2, w2 = g.shape
    y = _down_axis(_rows(g).view(n, h2, w2 * c), t)              # Along H: [N, H, 2W*C].
    y = _down_axis(y.view(n * (h2 // 2), w2, c), t)              # Along W: [N*H, W, C].
    return y.view(n, h2 // 2, w2 // 2, c).permute(0, 3, 1, 2)


class _Up(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t):
        ctx.t = t
        return _up(x, t)

    @staticmethod
    def backward(ctx, g):
        return _Down.apply(g, ctx.t), None


class _Down(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, t):
        ctx.t = t
        return _down(g, t)

    @staticmethod
    def backward(ctx, gx):
        return _Up.apply(gx, ctx.t), None


def upsample2d_nhwc(x: torch.Tensor, t: float) -> torch.Tensor:
    """upfirdn2d.upsample2d(x, f) (up 2, no extra padding, gain 1) for x [N, C, H, W] and the filter
    whose polyphase_weight(f) is t; the output [N, C, 2H, 2W] is channels-last (any input layout
    works, channels-last is read in place). Differentiable to any order."""
    if x.ndim != 4:
        raise ValueError(f'upsample2d_nhwc: expected [N, C, H, W], got {list(x.shape)}')
    return _Up.apply(x, float(t))
