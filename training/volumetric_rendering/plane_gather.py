"""Tri-plane look-up in one pass: the mean over the planes of bilinear plane samples, as one weighted
gather of feature rows, instead of one grid_sample over N * P planes followed by a mean.

For a point and plane p, grid_sample (bilinear, align_corners=False, zero padding) reads four texels
with weights (1 - fx)(1 - fy), fx (1 - fy), (1 - fx) fy, fx fy, a texel outside the plane reading 0.
The mean over P planes is therefore a weighted sum of 4 P feature vectors, and with the planes stored
channels-last (a feature vector is C consecutive floats) that is exactly what
torch.nn.functional.embedding_bag computes (mode 'sum' with per-sample weights), in one pass with no
[N, P, C, M] intermediate. Out-of-plane texels get weight 0 (and a valid dummy row).

The backward is a scatter-add of the weighted incoming gradient into the rows (on the CPU the host
kernel render_ops.plane_scatter, or without it a sparse matrix product; elsewhere index_add_ in chunks so
the [points, 4 P, C] products stay small), and, when the points need a gradient, the weights'
gradient: the dot products of the gathered rows with the incoming gradient. Both are first-order
only (double backward raises); the renderer's points never need more.

sample_plane_mean() takes the same arguments as renderer.sample_from_planes() and returns its
.mean(1), equal up to float rounding (tests/test_renderer.py compares them in float64, values and
gradients). It runs for CPU float32 / float64 tensors; use_gather() says when the renderer uses it.
On the host, unless the points need a gradient, one fused kernel (torch_utils/ops/render_ops) does the
corners, weights and sums per point instead, and for the backward also writes the rows and weights it
read (tests/test_render_ops.py).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ENV = 'EG3D_PLANE_SAMPLING'          # 'auto' (default), 'gather' or 'grid_sample'.
SCATTER_ENV = 'EG3D_PLANE_SCATTER'  # The backward into the planes: 'auto' (default) or 'sparse'.
_CHUNK = 8192                        # Points per index_add_ chunk in the backward.

# ----------------------------------------------------------------------------


def use_gather(plane_features: torch.Tensor, impl: str | None = None) -> bool:
    """Whether the renderer samples the planes with the gather (sample_plane_mean).

    impl (or $EG3D_PLANE_SAMPLING): 'grid_sample' never, 'gather' always (errors where unsupported),
    'auto' on CPU for float32 / float64 unless EG3D_FUSED_OPS=0 (the reference path everywhere).
    On CUDA, 'auto' keeps grid_sample (its kernel is fused already; the gather is unmeasured there).
    """
    from torch_utils.ops import _impl
    impl = impl or os.environ.get(ENV, 'auto').strip().lower() or 'auto'
    if impl not in ('auto', 'gather', 'grid_sample'):
        raise ValueError(f"{ENV} / plane_sampling must be 'auto', 'gather' or 'grid_sample', got {impl!r}")
    if impl == 'grid_sample':
        return False
    supported = plane_features.dtype in (torch.float32, torch.float64)
    if impl == 'gather':
        if not supported:
            raise ValueError(f'plane_sampling=gather: needs float32 or float64 planes, got {plane_features.dtype}')
        return True
    return supported and plane_features.device.type == 'cpu' and _impl.enabled()


def _host_kernels(table: torch.Tensor, coordinates: torch.Tensor, n_planes: int):
    """The fused host gather (torch_utils/ops/render_ops: corners, weights and the weighted sum of rows per
    point in one pass) for CPU float32 / float64 tensors, unless the points need a gradient (their
    gradient flows through _corners' weights); else None (the embedding_bag path: points with gradients,
    CUDA, EG3D_FUSED_OPS=0). Whether the table needs a gradient does not change the forward's bits."""
    from torch_utils.ops import render_ops_fused
    if (torch.is_grad_enabled() and coordinates.requires_grad) or n_planes > render_ops_fused.MAX_PLANES:
        return None
    return render_ops_fused.host_plugin(table, coordinates)


def _transpose_planes(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst[i] = src[i].t() for 3-D src [B, X, Y] (any strides) and contiguous dst [B, Y, X], one 2-D
    copy per plane: torch's blocked 2-D transpose copy, about 2x a strided copy of the whole tensor."""
    for i in range(src.shape[0]):
        dst[i].copy_(src[i].t())
    return dst


class _PlanesToRows(torch.autograd.Function):
    """Contiguous planes [B, C, H*W] -> rows [B, H*W, C] (and back in the backward)."""

    @staticmethod
    def forward(ctx, planes):
        b, c, hw = planes.shape
        return _transpose_planes(planes, planes.new_empty([b, hw, c]))

    @staticmethod
    def backward(ctx, grad):
        b, hw, c = grad.shape
        return _transpose_planes(grad, grad.new_empty([b, c, hw]))


def feature_table(plane_features: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """planes [N, P, C, H, W] -> (rows [N*P*H*W, C], row strides of n, p, h, w). A layout that already
    keeps C innermost and dense (e.g. a channels-last [N, P*C, H, W] backbone output) is used as is,
    anything else is transposed to [N, P, H, W, C]."""
    n, n_planes, c, h, w = plane_features.shape
    t = plane_features.permute(0, 1, 3, 4, 2)                                # [N, P, H, W, C]
    order = sorted(range(4), key=lambda d: -t.stride(d))
    ordered = t.permute(*order, 4)
    if ordered.is_contiguous():
        return ordered.reshape(-1, c), [t.stride(d) // c for d in range(4)]
    rows = _PlanesToRows.apply(plane_features.reshape(n * n_planes, c, h * w))
    return rows.reshape(-1, c), [n_planes * h * w, h * w, w, 1]


def _corners(plane_axes: torch.Tensor, coordinates: torch.Tensor, size_hw: tuple[int, int],
             strides: list[int], n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and weights [N * M, 4 P] of the texels each point reads (weights include 1 / P)."""
    n, m, _ = coordinates.shape
    h, w = size_hw
    n_planes = plane_axes.shape[0]
    inv_axes = torch.linalg.inv(plane_axes.to(coordinates.dtype))[:, :, :2]
    uv = torch.einsum('nmk,pkj->nmpj', coordinates, inv_axes)                 # [N, M, P, 2]
    # grid_sample's unnormalisation (align_corners=False): pixel = ((u + 1) * size - 1) / 2.
    ix = ((uv[..., 0] + 1) * w - 1) / 2
    iy = ((uv[..., 1] + 1) * h - 1) / 2
    x0 = torch.floor(ix)
    y0 = torch.floor(iy)
    x1 = x0 + 1
    y1 = y0 + 1
    # Weights as grid_sample forms them (distances to the opposite corner).
    wx0, wx1 = x1 - ix, ix - x0
    wy0, wy1 = y1 - iy, iy - y0
    in_x0 = (x0 >= 0) & (x0 <= w - 1)
    in_x1 = (x1 >= 0) & (x1 <= w - 1)
    in_y0 = (y0 >= 0) & (y0 <= h - 1)
    in_y1 = (y1 >= 0) & (y1 <= h - 1)
    scale = 1.0 / n_planes
    valid = torch.stack([in_x0 & in_y0, in_x1 & in_y0, in_x0 & in_y1, in_x1 & in_y1], dim=-1)  # [N, M, P, 4]
    weights = torch.stack([wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1], dim=-1) * scale
    weights = torch.where(valid, weights, torch.zeros((), dtype=ix.dtype, device=ix.device))
    # Integer texel indices (NaN / out-of-range points: any value, their weights are 0; clamp keeps
    # the indices valid).
    xi = torch.nan_to_num(x0, nan=0.0).clamp_(-1, w - 1).long()
    yi = torch.nan_to_num(y0, nan=0.0).clamp_(-1, h - 1).long()
    sn, sp, sh, sw = strides
    base = (torch.arange(n, device=ix.device) * sn).view(n, 1, 1) + (torch.arange(n_planes, device=ix.device) * sp).view(1, 1, n_planes)
    r00 = base + yi * sh + xi * sw
    offsets = torch.tensor([0, sw, sh, sh + sw], device=ix.device)
    rows = r00.unsqueeze(-1) + offsets                                          # [N, M, P, 4]
    rows = torch.where(valid, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
    if n_rows < 2 ** 31:
        rows = rows.to(torch.int32)                                             # Half the memory.
    return rows.reshape(n * m, 4 * n_planes), weights.reshape(n * m, 4 * n_planes)


def _scatter_rows(rows: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor, table_shape,
                  impl: str | None = None) -> torch.Tensor:
    """grad_table [R, C] (contiguous, the layout of feature_table()'s rows) with grad_table[r] = sum over
    (i, k) with rows[i, k] = r of weights[i, k] * grad[i]: the gather's transpose. impl (or
    $EG3D_PLANE_SCATTER): 'auto' (default) runs the host kernel (render_ops.plane_scatter: each thread
    owns a range of table rows, no sorting, no races) for CPU float32 / float64 unless EG3D_FUSED_OPS=0
    or the plugin is missing, else 'sparse'; 'sparse' is S^T @ grad on the CPU with S the sparse
    [points, table rows] CSR matrix of the weights (K entries per point), and index_add_ in chunks
    elsewhere."""
    from torch_utils.ops import render_ops_fused
    c = table_shape[1]
    impl = impl or os.environ.get(SCATTER_ENV, 'auto').strip().lower() or 'auto'
    if impl not in ('auto', 'sparse'):
        raise ValueError(f"{SCATTER_ENV} must be 'auto' or 'sparse', got {impl!r}")
    if impl == 'auto' and rows.device.type == 'cpu' and rows.shape[1] <= 4 * render_ops_fused.MAX_PLANES:
        plugin = render_ops_fused.host_plugin(weights, grad)
        if plugin is not None:
            return plugin.plane_scatter(rows, weights, grad, table_shape[0])
    if grad.device.type == 'cpu':
        n_points, k = rows.shape
        crow = torch.arange(0, n_points * k + 1, k, dtype=rows.dtype, device=rows.device)
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')
            s = torch.sparse_csr_tensor(crow, rows.reshape(-1), weights.reshape(-1),
                                        size=(n_points, table_shape[0]), check_invariants=False)
        return torch.mm(s.t(), grad)
    grad_table = grad.new_zeros(table_shape)
    for s in range(0, rows.shape[0], _CHUNK):
        src = weights[s:s + _CHUNK, :, None] * grad[s:s + _CHUNK, None, :]
        grad_table.index_add_(0, rows[s:s + _CHUNK].reshape(-1), src.reshape(-1, c))
    return grad_table


class _HostGather(torch.autograd.Function):
    """The fused host gather for a table that needs a gradient: the kernel also writes the rows and
    weights it read ([points, 4 P], as _corners), and the backward scatters through them."""

    @staticmethod
    def forward(ctx, table, plugin, strides, inv_axes, coordinates, size_hw, scale):
        out, rows, weights = plugin.plane_gather(table, strides, inv_axes, coordinates, size_hw, scale, corners=True)
        ctx.save_for_backward(rows, weights)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rows, weights = ctx.saved_tensors
        grad_table = _scatter_rows(rows, weights, grad.reshape(rows.shape[0], -1).contiguous(), ctx.table_shape)
        return grad_table, None, None, None, None, None, None


class _WeightedGather(torch.autograd.Function):
    """out[i] = sum_k weights[i, k] * table[rows[i, k]]: embedding_bag forward, index_add_ backward."""

    @staticmethod
    def forward(ctx, table, rows, weights):
        # The table (a copy of the planes) is kept only when the points need a gradient.
        ctx.save_for_backward(table if ctx.needs_input_grad[2] else None, rows, weights)
        ctx.table_shape = table.shape
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode='sum')

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        grad = grad.contiguous()
        if ctx.needs_input_grad[0]:
            grad_table = _scatter_rows(rows, weights, grad, ctx.table_shape)
        if ctx.needs_input_grad[2]:
            grad_weights = torch.empty_like(weights)
            for s in range(0, rows.shape[0], _CHUNK):
                gathered = table[rows[s:s + _CHUNK]]                           # [chunk, K, C]
                grad_weights[s:s + _CHUNK] = torch.einsum('nkc,nc->nk', gathered, grad[s:s + _CHUNK])
        return grad_table, None, grad_weights


def sample_plane_mean(plane_axes: torch.Tensor, plane_features: torch.Tensor, coordinates: torch.Tensor,
                      box_warp: float | None = None, table: tuple | None = None) -> torch.Tensor:
    """Mean over the planes of the bilinear plane samples: plane axes [P, 3, 3], features
    [N, P, C, H, W], points [N, M, 3] -> [N, M, C] (= sample_from_planes(...).mean(1), zero padding,
    align_corners=False). Differentiable with respect to the features and the points (first order).
    table: feature_table(plane_features) when the caller samples the same planes several times."""
    n, n_planes, c, h, w = plane_features.shape
    if plane_axes.shape[0] != n_planes or coordinates.ndim != 3 or coordinates.shape[0] != n \
            or coordinates.shape[-1] != 3:
        raise ValueError(f'sample_plane_mean: {plane_axes.shape[0]} plane axes, plane features '
                         f'{list(plane_features.shape)} and points {list(coordinates.shape)} do not fit '
                         f'(expected [N, P, C, H, W] and [N, M, 3])')
    m = coordinates.shape[1]
    coordinates = coordinates.to(plane_features.dtype)
    table, strides = feature_table(plane_features) if table is None else table
    plugin = _host_kernels(table, coordinates, n_planes)
    if plugin is not None:
        inv_axes = torch.linalg.inv(plane_axes.to(coordinates.dtype))[:, :, :2]
        scale = 1.0 if box_warp is None else 2 / box_warp
        if torch.is_grad_enabled() and table.requires_grad:
            return _HostGather.apply(table, plugin, strides, inv_axes, coordinates, (h, w), scale)
        return plugin.plane_gather(table, strides, inv_axes, coordinates, (h, w), scale)
    if box_warp is not None:
        coordinates = (2 / box_warp) * coordinates
    rows, weights = _corners(plane_axes.to(coordinates.device), coordinates, (h, w), strides, table.shape[0])
    return _WeightedGather.apply(table, rows, weights).view(n, m, c)
