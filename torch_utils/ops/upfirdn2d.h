// upfirdn2d fused kernels: the parameters shared by the kernels (upfirdn2d_kernels.cu) and the Python
// binding (upfirdn2d_plugin.cpp).
//
// Along each axis, with up U, down D, leading padding p0 and K taps g (correlation order: the wrapper
// flips a convolution filter), output o reads the zero-inserted, padded signal at o*D .. o*D+K-1, of
// which only every U-th sample is non-zero. Writing o = G*q + r with G = U/gcd(U, D), every output of
// phase r uses the taps g[k0_r + s*U], s = 0 .. ceil(K/U)-1, on the inputs i0_r + q*S + s, with
// S = D/gcd(U, D): a small dense filter per phase (polyphase form), never multiplying inserted zeros.
#pragma once

#include <cstdint>

#include "portable.h"

namespace eg {

constexpr int kMaxUp = 8;     // Largest up factor per axis (phases per axis).
constexpr int kMaxDown = 16;  // Largest down factor per axis.
constexpr int kMaxTaps = 64;  // Largest filter size per axis (a filter must also fit a tile's buffers).

struct Upfirdn2dAxis {
    int up, down, pad0, taps;  // U, D, leading padding (negative crops), K.
    int groups;                // G = U / gcd(U, D): output phases.
    int step;                  // S = D / gcd(U, D): input step per group of G outputs.
    int phase_taps;            // ceil(K / U): taps per phase (zero-padded).
    int imin;                  // Smallest first input index over the phases (at q = 0).
    int span;                  // Largest first input index minus imin.
    int k0[kMaxUp];            // First tap of each phase.
    int off[kMaxUp];           // First input index of each phase, minus imin.
    int tile_q;                // Groups of G outputs per tile (filled in by the launcher).
    int tile_in;               // Input samples per tile: (tile_q - 1) * S + phase_taps + span.
};

struct Upfirdn2dParams {
    const void* x;       // [N, C, in_h, in_w] with the strides below (plane = n * C + c).
    void* y;             // [planes, out_h, out_w], contiguous.
    const void* f;       // Taps in the arithmetic type (float; double for double), correlation order,
                         // gain applied: [kh, kw] (2-D) or [k] (separable, both axes).
    int64_t planes;      // N * C.
    int in_w, in_h, out_w, out_h;
    int separable;       // 1: f is 1-D, applied along x then y.
    int dtype;           // eg::DType of x and y.
    Upfirdn2dAxis ax, ay;
    int planes_per_block;  // Filled in by the launcher.
    int64_t channels;      // C: planes of one sample.
    int64_t x_sn, x_sc, x_sy, x_sx;  // x's strides in elements (channels-last input: x_sc = 1).
};

// Fills in an axis's polyphase tables; returns nullptr or what is out of range.
const char* upfirdn2d_axis(Upfirdn2dAxis& a, int up, int down, int pad0, int taps);

// Runs the upfirdn2d kernel for `p` (axes set up by upfirdn2d_axis). Returns nullptr or an error.
const char* upfirdn2d_launch(Upfirdn2dParams p, void* stream, HostExec exec);

}  // namespace eg
