"""Bias, activation, gain and clamp in one op: y = clamp(act(x + b) * gain, -clamp, clamp)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from . import _impl


class Activation(NamedTuple):
    func: Callable         # func(x, alpha) -> y
    def_alpha: float       # Default alpha (the negative slope for lrelu).
    def_gain: float        # Default gain: keeps the expected magnitude of a unit Gaussian input.
    cuda_idx: int          # Index used by the fused kernels.
    ref: str               # Which of x/y the fused gradient needs: '', 'x' or 'y'.
    has_2nd_grad: bool     # Whether the second derivative is non-zero.


# Upstream's table (eg3d-facts section 8).
activation_funcs = {
    'linear':   Activation(lambda x, alpha: x,                       0,   1,            1, '',  False),
    'relu':     Activation(lambda x, alpha: F.relu(x),               0,   math.sqrt(2), 2, 'y', False),
    'lrelu':    Activation(lambda x, alpha: F.leaky_relu(x, alpha),  0.2, math.sqrt(2), 3, 'y', False),
    'tanh':     Activation(lambda x, alpha: torch.tanh(x),           0,   1,            4, 'y', True),
    'sigmoid':  Activation(lambda x, alpha: torch.sigmoid(x),        0,   1,            5, 'y', True),
    'elu':      Activation(lambda x, alpha: F.elu(x),                0,   1,            6, 'y', True),
    'selu':     Activation(lambda x, alpha: F.selu(x),               0,   1,            7, 'y', True),
    'softplus': Activation(lambda x, alpha: F.softplus(x),           0,   1,            8, 'y', True),
    'swish':    Activation(lambda x, alpha: torch.sigmoid(x) * x,    0,   math.sqrt(2), 9, 'x', True),
}

last_impl: str | None = None  # Which implementation served the last call: 'ref' or 'fused'.


def resolve_args(act: str, alpha, gain, clamp) -> tuple[Activation, float, float, float]:
    """Fill in the activation's defaults; clamp < 0 means no clamp."""
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation {act!r}; one of {", ".join(activation_funcs)}')
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = 'auto') -> torch.Tensor:
    """Add bias `b` (shape [x.shape[dim]]) along `dim`, apply `act`, scale by `gain`, clamp to +-`clamp`.

    alpha, gain: None takes the activation's default. clamp: None or negative disables clamping.
    """
    global last_impl
    if not isinstance(x, torch.Tensor):
        raise TypeError('bias_act: x must be a tensor')
    if _impl.resolve('bias_act', impl, x.device) == 'fused':
        try:
            y = _impl.fused_plugin('bias_act', x.device).bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain,
                                                                  clamp=clamp)
            last_impl = 'fused'
            return y
        except _impl.Unsupported as e:
            if impl == 'fused':
                raise ValueError(f"bias_act: impl='fused' cannot serve this call ({e})") from None
            _impl.warn_once('bias_act', f'the fused kernel does not support {e}')
    last_impl = 'ref'
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
                 alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """The reference path: plain PyTorch ops, differentiable to any order."""
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
            raise ValueError(f'bias_act: bias of shape {list(b.shape)} does not match dimension {dim} of '
                             f'x with shape {list(x.shape)}')
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
