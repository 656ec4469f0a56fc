"""The renderer's host kernels (render_ops_kernels.cu) for CPU float32 / float64 tensors: softplus
(forward in place or not, and its gradient), the OSGDecoder's output split, and the one-pass tri-plane
gather; the Winograd convolution's tile transforms (winograd_kernels.cu, used by winograd.py); and a
4-tap FIR from channels-last into NCHW (fir_kernels.cu, used by conv2d_resample). Callers check the
device and dtype (supports()) and keep torch's path elsewhere; the differentiable wrappers live with
their users (training/triplane.py, volumetric_rendering/plane_gather.py).
"""

from __future__ import annotations

import torch

from . import _impl

DTYPES = {torch.float32: 0, torch.float64: 1}
SOFTPLUS_FORWARD, SOFTPLUS_GRAD = 0, 1
MAX_PLANES, MAX_SETS, MAX_RAY_SAMPLES = 4, 4, 1024  # As render_ops.h.


def supports(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors: all on the CPU, one float32 / float64 dtype."""
    dtype = tensors[0].dtype
    return dtype in DTYPES and all(t.device.type == 'cpu' and t.dtype == dtype for t in tensors)


def host_plugin(*tensors: torch.Tensor) -> 'Plugin | None':
    """The host kernels when they can take these tensors (supports()) and the plugin is on and loads
    (EG3D_FUSED_OPS, a failed build: warned once by _impl), else None: the caller keeps torch's path."""
    if not supports(*tensors):
        return None
    return _impl.fused_plugin('render_ops', 'cpu')


class Plugin:
    """The renderer kernels of the host (what _impl.fused_plugin('render_ops', 'cpu') returns)."""

    def __init__(self, module):
        self.module = module

    @staticmethod
    def _check(*tensors: torch.Tensor) -> None:
        if not supports(*tensors):
            raise ValueError(f'render_ops: needs CPU tensors of one dtype, float32 or float64; got '
                             f'{[(t.device.type, t.dtype) for t in tensors]}')

    def softplus(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """softplus(x) as torch.nn.Softplus() (beta 1, threshold 20) into `out` (may be x; default new)."""
        x = x.contiguous()
        out = torch.empty_like(x) if out is None else out
        self._check(x, out)
        if not out.is_contiguous() or out.shape != x.shape:
            raise ValueError('render_ops.softplus: out must be contiguous and shaped as x')
        self.module.softplus(x.data_ptr(), 0, out.data_ptr(), x.numel(), SOFTPLUS_FORWARD, DTYPES[x.dtype],
                             _impl.host_exec()[0])
        return out

    def softplus_grad(self, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """dy * sigmoid(x), the gradient of softplus at x."""
        dy, x = dy.contiguous(), x.contiguous()
        self._check(dy, x)
        if dy.shape != x.shape:
            raise ValueError(f'render_ops.softplus_grad: dy {list(dy.shape)} and x {list(x.shape)} differ')
        out = torch.empty_like(x)
        self.module.softplus(x.data_ptr(), dy.data_ptr(), out.data_ptr(), x.numel(), SOFTPLUS_GRAD,
                             DTYPES[x.dtype], _impl.host_exec()[0])
        return out

    def decoder_tail(self, src: torch.Tensor, sigma: torch.Tensor, rgb: torch.Tensor, scale: float,
                     shift: float) -> None:
        """sigma[r] = src[r, 0]; rgb[r] = sigmoid(src[r, 1:]) * scale + shift, for 2-D src [R, 1 + C]
        (unit column stride), sigma [R, 1] and rgb [R, C] (unit column stride)."""
        self._check(src, sigma, rgb)
        rows, c = rgb.shape
        if src.shape != (rows, c + 1) or sigma.shape != (rows, 1) or src.stride(1) != 1 or rgb.stride(1) != 1:
            raise ValueError(f'render_ops.decoder_tail: src {list(src.shape)}, sigma {list(sigma.shape)}, rgb '
                             f'{list(rgb.shape)} do not fit (unit column strides)')
        self.module.decoder_tail(src.data_ptr(), sigma.data_ptr(), rgb.data_ptr(), rows, c, src.stride(0),
                                 sigma.stride(0), rgb.stride(0), scale, shift, DTYPES[src.dtype], _impl.host_exec()[0])

    def plane_gather(self, table: torch.Tensor, strides: list[int], axes: torch.Tensor, coordinates: torch.Tensor,
                     size_hw: tuple[int, int], scale: float, corners: bool = False):
        """Mean over the planes of the bilinear samples (zero padding, align_corners=False): table rows
        [R, C] (row of texel (n, p, y, x) = n sn + p sp + y sh + x sw), projections axes [P, 3, 2],
        points [N, M, 3] (times `scale`) -> [N, M, C]. corners: also the texel rows (int32 when the table
        has fewer than 2^31 rows) and weights [N * M, 4 P] read, as plane_gather._corners gives them
        (0 and 0 for corners outside the plane): returns (out, rows, weights)."""
        coordinates = coordinates.contiguous()
        self._check(table, coordinates)
        n, m, _ = coordinates.shape
        rows, c = table.shape
        n_planes = axes.shape[0]
        if table.stride() != (c, 1) or axes.shape[1:] != (3, 2) or not 1 <= n_planes <= MAX_PLANES:
            raise ValueError(f'render_ops.plane_gather: table {list(table.shape)} (strides {table.stride()}) must '
                             f'be dense rows, axes [P <= {MAX_PLANES}, 3, 2], got {list(axes.shape)}')
        h, w = size_hw
        sn, sp, sh, sw = strides
        last = (n - 1) * sn + (n_planes - 1) * sp + (h - 1) * sh + (w - 1) * sw
        if min(strides) < 0 or last >= rows:
            raise ValueError(f'render_ops.plane_gather: strides {strides} reach beyond the table ({rows} rows)')
        out = coordinates.new_empty([n, m, c])
        rows_out = weights_out = None
        if corners:
            rows_out = torch.empty([n * m, 4 * n_planes], dtype=torch.int32 if rows < 2 ** 31 else torch.int64)
            weights_out = coordinates.new_empty([n * m, 4 * n_planes])
        ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
        self.module.plane_gather(table.data_ptr(), coordinates.data_ptr(), out.data_ptr(), ptr(rows_out),
                                 ptr(weights_out), int(rows_out is not None and rows_out.dtype == torch.int64),
                                 axes.detach().double().reshape(-1).tolist(), float(scale), n, m, c, h, w, n_planes,
                                 sn, sp, sh, sw, DTYPES[table.dtype], _impl.host_exec()[0])
        return (out, rows_out, weights_out) if corners else out

    def plane_scatter(self, rows: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor, table_rows: int,
                      blocks: int | None = None) -> torch.Tensor:
        """The gather's transpose: out [table_rows, C] with out[r] = sum over (i, k) with rows[i, k] = r of
        weights[i, k] * grad[i], for rows (int32 / int64) and weights [points, K <= 4 * MAX_PLANES] as
        plane_gather() writes them and grad [points, C]. Entries of weight 0 are skipped. The table rows are
        split into `blocks` contiguous ranges (default: one per thread), each scanning all entries."""
        weights, grad = weights.contiguous(), grad.contiguous()
        rows = rows.contiguous()
        self._check(weights, grad)
        points, k = rows.shape
        c = grad.shape[1]
        if rows.dtype not in (torch.int32, torch.int64) or rows.device.type != 'cpu' or weights.shape != (points, k) \
                or grad.shape != (points, c) or not 1 <= k <= 4 * MAX_PLANES:
            raise ValueError(f'render_ops.plane_scatter: rows {list(rows.shape)} ({rows.dtype}), weights '
                             f'{list(weights.shape)} and grad {list(grad.shape)} do not fit (K <= {4 * MAX_PLANES})')
        out = grad.new_empty([table_rows, c])
        threads = _impl.host_exec()[0]
        blocks = max(1, min(blocks or threads, table_rows))
        self.module.plane_scatter(rows.data_ptr(), weights.data_ptr(), grad.data_ptr(), out.data_ptr(),
                                  int(rows.dtype == torch.int64), points, k, c, table_rows,
                                  -(-table_rows // blocks), DTYPES[grad.dtype], threads)
        return out

    def composite(self, colors: list[torch.Tensor], densities: list[torch.Tensor], depths: list[torch.Tensor],
                  white_back: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MipRayMarcher2 over the depth-sorted union of sample sets (colors [N, M, S_k, C], raw densities
        and depths [N, M, S_k, 1]) -> (features [N, M, C] (2 x - 1 applied), depth [N, M, 1] before the
        clamp to the batch's depth range (+inf where no weight), total weight [N, M, 1])."""
        n, m, _, c = colors[0].shape
        samples = [d.shape[2] for d in depths]
        colors = [t.contiguous() for t in colors]
        densities = [t.contiguous() for t in densities]
        depths = [t.contiguous() for t in depths]
        self._check(*colors, *densities, *depths)
        if not 1 <= len(samples) <= MAX_SETS or not 2 <= sum(samples) <= MAX_RAY_SAMPLES:
            raise ValueError(f'render_ops.composite: {len(samples)} sets of {samples} samples (at most '
                             f'{MAX_SETS} sets, 2 to {MAX_RAY_SAMPLES} samples per ray)')
        for col, den, dep, s in zip(colors, densities, depths, samples):
            if col.shape != (n, m, s, c) or den.shape != (n, m, s, 1) or dep.shape != (n, m, s, 1):
                raise ValueError(f'render_ops.composite: colors {list(col.shape)}, densities {list(den.shape)} '
                                 f'and depths {list(dep.shape)} do not fit')
        rgb = colors[0].new_empty([n, m, c])
        depth = colors[0].new_empty([n, m, 1])
        weight_sum = colors[0].new_empty([n, m, 1])
        self.module.composite([t.data_ptr() for t in colors], [t.data_ptr() for t in densities],
                              [t.data_ptr() for t in depths], samples, n * m, c, rgb.data_ptr(), depth.data_ptr(),
                              weight_sum.data_ptr(), int(white_back), DTYPES[rgb.dtype], _impl.host_exec()[0])
        return rgb, depth, weight_sum

    def importance(self, z: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Fine depths [R, K] by inverse-CDF sampling at uniforms u [R, K] from coarse depths z [R, S] and
        interval weights [R, S - 1], smoothed as ImportanceRenderer.sample_importance does (4 <= S <= 1024)."""
        z, weights, u = z.contiguous(), weights.contiguous(), u.contiguous()
        self._check(z, weights, u)
        rays, s = z.shape
        if weights.shape != (rays, s - 1) or u.shape[0] != rays or u.ndim != 2 or not 4 <= s <= MAX_RAY_SAMPLES:
            raise ValueError(f'render_ops.importance: z {list(z.shape)}, weights {list(weights.shape)}, u '
                             f'{list(u.shape)} do not fit (4 <= S <= {MAX_RAY_SAMPLES})')
        out = torch.empty_like(u)
        self.module.importance(z.data_ptr(), weights.data_ptr(), u.data_ptr(), out.data_ptr(), rays, s, u.shape[1],
                               DTYPES[z.dtype], _impl.host_exec()[0])
        return out

    def _winograd(self, output: int, adjoint: int, parity: int, p0: int, p1: int, p2: int, img: torch.Tensor,
                  c: int, rows: tuple[int, int] | None = None) -> None:
        n, _, h, w = img.shape
        ty = (h + 3) // 4
        ty0, tyn = rows if rows is not None else (0, ty)
        sb, sc, sh, sw = img.stride()
        self.module.winograd(output, adjoint, parity, p0, p1, p2, n, c, h, w, ty, (w + 3) // 4, ty0, tyn, sb, sc, sh,
                             sw, DTYPES[img.dtype], _impl.host_exec()[0])

    @staticmethod
    def _tile_rows(h: int, rows: tuple[int, int] | None) -> tuple[int, int]:
        ty = (h + 3) // 4
        ty0, tyn = rows if rows is not None else (0, ty)
        if not (0 <= ty0 and 0 <= tyn and ty0 + tyn <= ty):
            raise ValueError(f'render_ops.winograd: tile rows {rows} outside the {ty} of a {h}-pixel image')
        return ty0, tyn

    @staticmethod
    def _tiles(m: torch.Tensor, n: int, tyn: int, w: int, name: str) -> None:
        if m.ndim != 3 or m.shape[:2] != (36, n * tyn * ((w + 3) // 4)) or not m.is_contiguous():
            raise ValueError(f'render_ops.{name}: tiles {list(m.shape)} do not fit {n} images of {tyn} tile rows '
                             f'and width {w} (contiguous [36, N * tile rows * ceil(W / 4), C])')

    def winograd_input(self, x: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """V [36, N * TY * TX, C] = B^T d B of the 6x6 tiles of x [N, C, H, W] (any strides; channels-last
        is the fast case), TY = ceil(H / 4), TX = ceil(W / 4), zero padding 1. rows = (first, count): only
        those tile rows (TY = count)."""
        self._check(x)
        n, c, h, w = x.shape
        ty0, tyn = self._tile_rows(h, rows)
        v = x.new_empty([36, n * tyn * ((w + 3) // 4), c])
        self._winograd(0, 0, 0, x.data_ptr(), v.data_ptr(), 0, x, c, (ty0, tyn))
        return v

    def winograd_input_adjoint(self, dv: torch.Tensor, n: int, h: int, w: int,
                               channels_last: bool = True) -> torch.Tensor:
        """The gradient [N, C, H, W] of the image from that of V (winograd_input's transpose, all tile rows)."""
        dv = dv.contiguous()
        self._check(dv)
        self._tiles(dv, n, (h + 3) // 4, w, 'winograd_input_adjoint')
        c = dv.shape[2]
        dx = dv.new_zeros([n, h, w, c]).permute(0, 3, 1, 2) if channels_last else dv.new_zeros([n, c, h, w])
        for parity in (0, 1):
            self._winograd(0, 1, parity, 0, dv.data_ptr(), dx.data_ptr(), dx, c)
        return dx

    def winograd_output(self, m: torch.Tensor, n: int, h: int, w: int, channels_last: bool = True,
                        out: torch.Tensor | None = None, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The image [N, C, H, W] from the tile products m [36, N * TY * TX, C]: A^T m A per tile, cropped to
        H x W; stored channels-last, or contiguous, or into `out` (any strides). rows = (first, count): m
        holds only those tile rows, and only their pixels are written."""
        m = m.contiguous()
        self._check(m)
        ty0, tyn = self._tile_rows(h, rows)
        self._tiles(m, n, tyn, w, 'winograd_output')
        c = m.shape[2]
        if out is None:
            out = m.new_empty([n, h, w, c]).permute(0, 3, 1, 2) if channels_last else m.new_empty([n, c, h, w])
        elif out.shape != (n, c, h, w):
            raise ValueError(f'render_ops.winograd_output: out {list(out.shape)} is not {[n, c, h, w]}')
        self._check(m, out)
        self._winograd(1, 0, 0, m.data_ptr(), out.data_ptr(), 0, out, c, (ty0, tyn))
        return out

    def winograd_output_adjoint(self, dy: torch.Tensor) -> torch.Tensor:
        """The gradient [36, N * TY * TX, C] of the tile products from that of the image (winograd_output's
        transpose): A g A^T per tile, g the tile's 4x4 pixels (0 outside the image)."""
        self._check(dy)
        n, c, h, w = dy.shape
        dm = dy.new_empty([36, n * ((h + 3) // 4) * ((w + 3) // 4), c])
        self._winograd(1, 1, 0, dm.data_ptr(), dy.data_ptr(), 0, dy, c)
        return dm

    def fir4_nhwc(self, x: torch.Tensor, fx: list[float], fy: list[float],
                  padding: tuple[int, int, int, int]) -> torch.Tensor:
        """y[n, c, oy, ox] = sum_ij fy[i] fx[j] x[n, c, oy + i - y0, ox + j - x0] (zero outside the image): x
        [N, C, H, W] channels-last (unit channel stride, any pixel strides), padding (x0, x1, y0, y1) with
        x0, y0 in [0, 3] and x1, y1 <= 3 (negative: crop). Returns a contiguous [N, C, H', W']."""
        self._check(x)
        n, c, h, w = x.shape
        x0, x1, y0, y1 = padding
        out_h, out_w = h + y0 + y1 - 3, w + x0 + x1 - 3
        if (x.stride(1) != 1 and c > 1) or len(fx) != 4 or len(fy) != 4 or not (0 <= x0 <= 3 and 0 <= y0 <= 3) \
                or x1 > 3 or y1 > 3 or out_h < 1 or out_w < 1:
            raise ValueError(f'render_ops.fir4_nhwc: x {list(x.shape)} (strides {x.stride()}), padding {padding} '
                             f'do not fit (unit channel stride, 4 taps, padding before 0-3, after at most 3)')
        y = x.new_empty([n, c, out_h, out_w])
        self.module.fir4_nhwc(x.data_ptr(), y.data_ptr(), n, c, h, w, out_h, out_w, x.stride(0), x.stride(2),
                              x.stride(3), x0, y0, *[float(v) for v in fx], *[float(v) for v in fy],
                              DTYPES[x.dtype], _impl.host_exec()[0])
        return y
