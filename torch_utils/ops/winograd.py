"""3x3 convolutions (stride 1, zero padding 1) by Winograd's minimal filtering, F(4x4, 3x3), on the CPU.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016): each 4x4 block of output
pixels is A^T [(G g G^T) * (B^T d B)] A for its 6x6 input tile d and the 3x3 kernel g, so that per
tile and channel pair the product takes 36 multiplications instead of 144. Over the channels this is
36 matrix products (one per tile position), [tiles, C_in] @ [C_in, C_out], 4x fewer multiply-adds
than the direct convolution, plus passes over the images for the transforms (host kernels in
winograd_kernels.cu, reading and writing channels-last or NCHW images). The backward is the same
three steps transposed: the transforms' adjoints (host kernels) and torch's matrix products, so
gradients of any order flow (R1 needs the second).

float32 rounding is several times that of the direct convolution (about 1e-5 relative at 128
channels); the official fixture's outputs and loss gradients still match to a few 1e-6.

Used where it was measured to pay (2 threads, forward and forward + backward): float32 on the CPU,
C_in * C_out >= MIN_CHANNEL_PRODUCT, images of at least MIN_SIZE pixels a side, the host kernels
available (EG3D_FUSED_OPS). At 128 -> 128 channels, 4 x 64²: forward 27 -> 14-17 ms, forward + backward
92 -> 51 ms; at 32 x 32 channels it no longer pays. Without autograd the tiles are processed in bands
of rows (BAND_BYTES), so that large layers do not hold 2.25x their input and output in tile buffers.
EG3D_WINOGRAD=0 turns it off (torch's convolution everywhere).
"""

from __future__ import annotations

import os

import torch

from . import render_ops_fused

MIN_CHANNEL_PRODUCT = 64 * 64  # C_in * C_out.
MIN_SIZE = 32
BAND_BYTES = 32 * 2 ** 20  # Tile buffer size per band without autograd.
ENABLED = os.environ.get('EG3D_WINOGRAD', '1') != '0'

# The transforms for the points 0, 1, -1, 2, -2 and infinity.
BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
      (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
     (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))

_kron_cache: dict[torch.dtype, torch.Tensor] = {}


def _weight_matrix(dtype: torch.dtype) -> torch.Tensor:
    """kron(G, G) [36, 9]: U[(a, b)] = sum_ij G[a, i] G[b, j] g[i, j]."""
    if dtype not in _kron_cache:
        g = torch.tensor(G, dtype=torch.float64)
        _kron_cache[dtype] = torch.kron(g, g).to(dtype)
    return _kron_cache[dtype]


def transform_weight(w: torch.Tensor) -> torch.Tensor:
    """w [C_out, C_in, 3, 3] -> U [36, C_in, C_out]; per-sample w [N, C_out, C_in, 3, 3] -> [36, N, C_in, C_out]."""
    lead = w.shape[:-2]
    if w.ndim == 4:
        g = w.reshape(lead[0], lead[1], 9).permute(2, 1, 0).reshape(9, -1)  # [9, C_in * C_out]
        return (_weight_matrix(w.dtype) @ g).reshape(36, lead[1], lead[0])
    n, o, c = lead
    g = w.reshape(n, o, c, 9).permute(3, 0, 2, 1).reshape(9, -1)         # [9, N * C_in * C_out]
    return (_weight_matrix(w.dtype) @ g).reshape(36, n, c, o)


def applicable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether conv3x3 takes this call: CPU float32, a 3x3 kernel [.., C_out, C_in, 3, 3] with C_in * C_out >=
    MIN_CHANNEL_PRODUCT, images of at least MIN_SIZE pixels a side, and the host kernels available."""
    if not ENABLED or x.device.type != 'cpu' or x.dtype != torch.float32 or w.dtype != torch.float32:
        return False
    if x.ndim != 4 or w.ndim not in (4, 5) or w.shape[-2:] != (3, 3) or w.shape[-4] * w.shape[-3] < MIN_CHANNEL_PRODUCT:
        return False
    if min(x.shape[2], x.shape[3]) < MIN_SIZE:
        return False
    return render_ops_fused.host_plugin(x, w) is not None


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()


class _Input(torch.autograd.Function):
    """x [N, C, H, W] -> V [36, N * TY * TX, C]; the backward is the transpose (and its backward this)."""

    @staticmethod
    def forward(ctx, x):
        ctx.geometry = (x.shape[0], x.shape[2], x.shape[3], _is_nhwc(x))
        return render_ops_fused.host_plugin(x).winograd_input(x)

    @staticmethod
    def backward(ctx, dv):
        return _InputAdjoint.apply(dv, *ctx.geometry)


class _InputAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dv, n, h, w, channels_last):
        return render_ops_fused.host_plugin(dv).winograd_input_adjoint(dv, n, h, w, channels_last)

    @staticmethod
    def backward(ctx, g):
        return _Input.apply(g), None, None, None, None


class _Output(torch.autograd.Function):
    """M [36, N * TY * TX, C] -> y [N, C, H, W]; the backward is the transpose (and its backward this)."""

    @staticmethod
    def forward(ctx, m, n, h, w, channels_last):
        return render_ops_fused.host_plugin(m).winograd_output(m, n, h, w, channels_last)

    @staticmethod
    def backward(ctx, dy):
        return _OutputAdjoint.apply(dy), None, None, None, None


class _OutputAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy):
        ctx.geometry = (dy.shape[0], dy.shape[2], dy.shape[3], _is_nhwc(dy))
        return render_ops_fused.host_plugin(dy).winograd_output_adjoint(dy)

    @staticmethod
    def backward(ctx, g):
        return _Output.apply(g, *ctx.geometry)


def conv3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Correlation of x [N, C_in, H, W] with w [C_out, C_in, 3, 3] (or one kernel per sample,
    [N, C_out, C_in, 3, 3]), stride 1, zero padding 1: F.conv2d(x, w, padding=1) (per sample).
    The result is stored as x is (channels-last or contiguous). Differentiable to any order (the
    transforms' backward passes are each other's transposes). Callers check applicable() first."""
    return conv3x3_transformed(x, transform_weight(w))


def conv3x3_modulated(x: torch.Tensor, w: torch.Tensor, styles: torch.Tensor,
                      dcoefs: torch.Tensor | None) -> torch.Tensor:
    """conv3x3 with StyleGAN2's per-sample kernels w[None] * styles[:, None, :, None, None] (* dcoefs[:, :,
    None, None, None]) for w [C_out, C_in, 3, 3], styles [N, C_in], dcoefs [N, C_out] or None: the
    modulation applied to the transformed kernel (per tile position the same scaling), so that the
    per-sample kernels are never formed and transformed one by one."""
    u = transform_weight(w)                                        # [36, C_in, C_out]
    scale = styles.unsqueeze(2) if dcoefs is None else styles.unsqueeze(2) * dcoefs.unsqueeze(1)  # [N, C_in, C_out]
    return conv3x3_transformed(x, u.unsqueeze(1) * scale.unsqueeze(0))


def conv3x3_transformed(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """conv3x3 with a transformed kernel: u [36, C_in, C_out] (transform_weight), or per sample
    [36, N, C_in, C_out]."""
    n, _, h, wd = x.shape
    if not torch.is_grad_enabled():  # Not merely nothing requiring grad: the path (and the last bits)
        return _conv3x3_bands(x, u)  # then depend on the grad mode alone.
    m = _products(_Input.apply(x), u, n)                           # [36, N * T, C_out]
    return _Output.apply(m, n, h, wd, _is_nhwc(x))


def _products(v: torch.Tensor, u: torch.Tensor, n: int) -> torch.Tensor:
    """The products per tile position: V [36, N * T, C_in] @ U [36, C_in, C_out], or per sample with U
    [36, N, C_in, C_out] -> [36, N * T, C_out]."""
    if u.ndim == 3:
        return torch.bmm(v, u)
    t, c = v.shape[1] // n, v.shape[2]
    return torch.bmm(v.view(36 * n, t, c), u.reshape(36 * n, c, -1)).view(36, n * t, -1)


def _conv3x3_bands(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """conv3x3 without autograd, in bands of tile rows so that the tile buffers (V and M, 2.25x the
    input and output each) stay within BAND_BYTES (the peak memory of big layers)."""
    plugin = render_ops_fused.host_plugin(x)
    n, c, h, wd = x.shape
    o = u.shape[-1]
    ty, tx = (h + 3) // 4, (wd + 3) // 4
    per_row = 36 * n * tx * max(c, o) * x.element_size()
    band = max(1, min(ty, BAND_BYTES // max(per_row, 1)))
    nhwc = _is_nhwc(x)
    y = x.new_empty([n, h, wd, o]).permute(0, 3, 1, 2) if nhwc else x.new_empty([n, o, h, wd])
    for ty0 in range(0, ty, band):
        rows = (ty0, min(band, ty - ty0))
        m = _products(plugin.winograd_input(x, rows), u, n)        # V: [36, N * rows * TX, C_in]
        plugin.winograd_output(m, n, h, wd, out=y, rows=rows)
    return y


def reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """conv3x3 in torch operations (tests): the same transforms, in x's dtype."""
    n, c, h, wd = x.shape
    ty, tx = (h + 3) // 4, (wd + 3) // 4
    bt, at = (torch.tensor(m, dtype=x.dtype) for m in (BT, AT))
    xp = torch.nn.functional.pad(x, (1, 4 * tx + 1 - wd, 1, 4 * ty + 1 - h))
    d = xp.unfold(2, 6, 4).unfold(3, 6, 4)                         # [N, C, TY, TX, 6, 6]
    v = torch.einsum('ai,bj,ncyxij->abnyxc', bt, bt, d).reshape(36, n, ty * tx, c)
    u = transform_weight(w)
    u = u.unsqueeze(1).expand(36, n, c, u.shape[-1]) if w.ndim == 4 else u
    m = (v @ u).reshape(6, 6, n, ty, tx, -1)
    y = torch.einsum('ia,jb,abnyxo->noyixj', at, at, m).reshape(n, -1, 4 * ty, 4 * tx)
    return y[:, :, :h, :wd]
