// Renderer host kernels (render_ops_kernels.cu): the parameters shared by the kernels and the Python
// binding (render_ops_plugin.cpp). Host-only: the renderer keeps torch's fused CUDA kernels on the GPU.
#pragma once

#include <cstdint>

#include "portable.h"

namespace eg {

enum SoftplusMode : int {
    kSoftplusForward = 0,  // out = softplus(x) (beta 1, threshold 20, as torch.nn.Softplus); out may be x.
    kSoftplusGrad = 1,     // out = dy * sigmoid(x); out may be dy.
};

struct SoftplusParams {
    const void* x;    // [n] input.
    const void* dy;   // [n] incoming gradient (kSoftplusGrad), or null.
    void* out;        // [n] result.
    int64_t n;
    int mode;         // SoftplusMode.
    int dtype;        // eg::DType (float32 or float64).
};

// The OSGDecoder's output split: sigma[r] = src[r, 0], rgb[r, k] = sigmoid(src[r, 1 + k]) * scale + shift.
struct DecoderTailParams {
    const void* src;     // [rows, 1 + c], row stride src_stride.
    void* sigma;         // [rows], stride sigma_stride.
    void* rgb;           // [rows, c], row stride rgb_stride.
    int64_t rows, c, src_stride, sigma_stride, rgb_stride;
    double scale, shift;
    int dtype;
};

constexpr int kMaxPlanes = 4;

// out[i] = sum over planes p and the 4 bilinear corners of the weighted table rows (weights / planes),
// the mean of grid_sample(bilinear, zeros, align_corners=False) over the planes.
struct PlaneGatherParams {
    const void* table;   // [rows, c]: feature rows (row = n * sn + p * sp + y * sh + x * sw).
    const void* coords;  // [n, m, 3] points (contiguous), multiplied by `scale` before projection.
    void* out;           // [n, m, c].
    void* rows_out;      // [n * m, 4 planes] texel rows (int32 or int64; 0 for dropped corners), or null.
    void* weights_out;   // [n * m, 4 planes] their weights (/ planes; 0 for dropped corners), or null.
    int rows_int64;      // rows_out holds int64 (else int32).
    double axes[kMaxPlanes][3][2];  // Projection per plane: (u, v) = point @ axes[p].
    double scale;        // 2 / box_warp (1 for none).
    int64_t n, m, c, h, w, planes;
    int64_t sn, sp, sh, sw;
    int dtype;
};

// The gather's transpose (its backward into the table): out[r] = sum over (i, k) with rows[i, k] = r of
// weights[i, k] * grad[i]. out is zero-filled here; entries with weight 0 or a row outside [0, table_rows)
// are skipped. Each block owns a contiguous range of table rows and scans all entries (no races).
struct PlaneScatterParams {
    const void* rows;     // [points, k] table rows (int32 or int64).
    const void* weights;  // [points, k].
    const void* grad;     // [points, c] (contiguous).
    void* out;            // [table_rows, c] (contiguous).
    int rows_int64;       // rows holds int64 (else int32).
    int64_t points, k, c, table_rows;
    int64_t rows_per_block;
    int dtype;
};

constexpr int kMaxSets = 4;          // Sample sets per ray (coarse, fine, ...).
constexpr int kMaxRaySamples = 1024; // Samples per ray over all sets.

// MipRayMarcher2 over the depth-sorted union of sample sets, one ray per iteration: interval weights
// w_i = alpha_i prod_{j<i} (1 - alpha_j + 1e-10), alpha_i = 1 - exp(-softplus((s_i + s_{i+1}) / 2 - 1)
// (d_{i+1} - d_i)); rgb = 2 (sum_i w_i (c_i + c_{i+1}) / 2 [+ 1 - sum w]) - 1; depth = sum_i w_i
// (d_i + d_{i+1}) / 2 / sum w (NaN, i.e. 0 / 0, becomes +inf; the caller clamps).
struct CompositeParams {
    const void* colors[kMaxSets];     // [rays, samples[k], c] each.
    const void* densities[kMaxSets];  // [rays, samples[k]] raw densities.
    const void* depths[kMaxSets];     // [rays, samples[k]].
    int64_t samples[kMaxSets];
    int sets;
    int64_t rays, c;
    void* rgb;         // [rays, c].
    void* depth;       // [rays].
    void* weight_sum;  // [rays].
    int white_back;
    int dtype;
};

// The renderer's importance sampling per ray (ImportanceRenderer.sample_importance and sample_pdf):
// coarse weights max-pooled (2, stride 1, pad 1), average-pooled (2, stride 1), + 0.01; bins at the
// coarse midpoints; the pdf from the smoothed weights 1 .. S-3 (+ 1e-5); inverse-CDF at the uniforms u.
struct ImportanceParams {
    const void* z;   // [rays, s] coarse depths.
    const void* w;   // [rays, s - 1] coarse interval weights.
    const void* u;   // [rays, k] uniforms.
    void* out;       // [rays, k] fine depths.
    int64_t rays, s, k;
    int dtype;
};

// Winograd F(4x4, 3x3) transforms (winograd_kernels.cu) of a 3x3 correlation with zero padding 1:
// tile t = (b, ty, tx) covers output pixels [4 ty, 4 ty + 4) x [4 tx, 4 tx + 4) and reads input pixels
// from (4 ty - 1, 4 tx - 1), 6 x 6 of them (0 outside the image). Element (b, c, y, x) of an image sits
// at b sb + y sh + x sw + c sc (any strides; sc = 1, channels-last, is the fast case). V and M are
// [36, batch * tyn * tx, c] (contiguous), tile position (a, b) = 6 a + b.
struct WinogradInputParams {
    const void* x;    // [batch, c, h, w] input (forward).
    void* v;          // Forward: written, B^T d B per tile. Adjoint: read (the gradient dV).
    void* dx;         // Adjoint: [batch, c, h, w] image gradient, accumulated (zero-filled by the caller).
    int adjoint;      // 0: forward; 1: dx += the tiles' B dV B^T, tile rows of one parity per launch.
    int parity;
    int64_t batch, c, h, w, ty, tx;
    int64_t ty0, tyn;         // The tile rows [ty0, ty0 + tyn) only (V holds those); the adjoint: all.
    int64_t sb, sc, sh, sw;   // Strides of x (forward) or dx (adjoint).
    int dtype;
};
struct WinogradOutputParams {
    void* m;          // Forward: read, the products per tile. Adjoint: written, A g A^T per tile.
    void* y;          // [batch, c, h, w]: forward written (A^T m A, cropped); adjoint read (the gradient).
    int adjoint;
    int64_t batch, c, h, w, ty, tx;
    int64_t ty0, tyn;         // The tile rows [ty0, ty0 + tyn) only (M holds those).
    int64_t sb, sc, sh, sw;   // Strides of y.
    int dtype;
};

// A separable 4-tap FIR without resampling (fir_kernels.cu): y[b, c, oy, ox] = sum_ij fy[i] fx[j]
// x[b, c, oy + i - pad_y, ox + j - pad_x] (zero outside the image), from a channels-last x (unit channel
// stride) into a contiguous (NCHW) y [batch, c, out_h, out_w]. Padding before: 0 to 3; after: at most 3.
struct Fir4Params {
    const void* x;
    void* y;
    int64_t batch, c, in_h, in_w, out_h, out_w;
    int64_t x_sb, x_sh, x_sw;
    int64_t pad_x, pad_y;
    double fx[4], fy[4];
    int dtype;
};

const char* fir4_nhwc_launch(Fir4Params p, HostExec exec);
const char* winograd_input_launch(WinogradInputParams p, HostExec exec);
const char* winograd_output_launch(WinogradOutputParams p, HostExec exec);
const char* softplus_launch(SoftplusParams p, HostExec exec);
const char* decoder_tail_launch(DecoderTailParams p, HostExec exec);
const char* plane_gather_launch(PlaneGatherParams p, HostExec exec);
const char* plane_scatter_launch(PlaneScatterParams p, HostExec exec);
const char* composite_launch(CompositeParams p, HostExec exec);
const char* importance_launch(ImportanceParams p, HostExec exec);

}  // namespace eg
