// filtered_lrelu fused kernels: the parameters shared by the kernels (filtered_lrelu_kernels.cu) and the
// Python binding (filtered_lrelu_plugin.cpp).
//
// One pass computes, per plane and along each axis (x and y alike):
//   stage 1   m[j] = sum_k f1[k] * zp[j + k]: zp is the input (plus its channel's bias) with up-1 zeros
//             after every sample and `pad` zeros in front (negative pad crops), f1 in correlation order;
//   the point-wise step on m[j], 0 <= j < mid (outside that range m is taken as zero):
//             forward: v = (m > 0 ? m : m * slope) * gain, clamped to +-clamp; it may write a mask code
//             for the backward (below); linear: v = m * (the factor the mask code gives);
//   stage 3   out[o] = sum_k f3[k] * v[o * down + offset + k].
// The forward is (up, pad = padding before the up-FIR, fu; down, offset 0, fd). Its adjoint is again of
// this form, (down, taps3 - 1 + offset, fd reversed; up, pad - taps1 + 1, fu reversed), with the
// point-wise step multiplying by the saved derivative: the gradient never stores the upsampled tensor.
// Stage 1 runs in polyphase form (upfirdn2d.h): intermediate j = q * up + r uses the taps
// f1[k0_r + s * up] on inputs q + off_r + s, s < ceil(taps1 / up).
//
// The mask: the code of intermediate sample (jy, jx) of plane n is bits [b * jx, b * jx + b) of byte
// mask[(n * mid_y + jy) * mask_pitch + b * jx / 8] (least significant bits first), b = mask_bits:
// 1 without a clamp (0: m > 0, derivative gain; 1: m <= 0, gain * slope), 2 with one (2: clamped, 0).
#pragma once

#include <cstdint>

#include "portable.h"

namespace eg {

constexpr int kFlreluMaxUp = 8;     // Largest up (and down) factor.
constexpr int kFlreluMaxTaps = 64;  // Largest filter size per axis.

enum FlreluMode : int {
    kFlreluForward = 0,      // Forward values only.
    kFlreluForwardMask = 1,  // Forward values, and the mask codes the gradient needs.
    kFlreluLinear = 2,       // The point-wise step multiplies by the derivative read from the mask.
};

struct FlreluAxis {
    int in, out;           // Input and output lengths.
    int up, pad, taps1;    // Stage 1.
    int mid;               // Intermediate length.
    int down, offset, taps3;  // Stage 3.
    // Derived by flrelu_axis():
    int phase_taps;        // ceil(taps1 / up).
    int k0[kFlreluMaxUp];  // First tap of phase r.
    int off[kFlreluMaxUp]; // First input of phase r (at q = 0), minus imin.
    int imin, span;        // Smallest first input over the phases, and the largest off[r].
    // The tile (filled in by the launcher):
    int tile_out;          // Outputs per tile.
    int tile_mid;          // Intermediate samples per tile: (tile_out - 1) * down + taps3 + up - 1.
    int tile_q;            // ceil(tile_mid / up): intermediate samples per phase.
    int tile_in;           // Input samples per tile: tile_q + span + phase_taps - 1.
    int tile_z;            // ceil(tile_mid / down): intermediate samples per phase of stage 3.
};

struct FlreluParams {
    const void* x;         // [planes, in_y, in_x], contiguous, dtype.
    void* y;               // [planes, out_y, out_x], contiguous, dtype.
    const void* b;         // [channels] in the arithmetic type (bias of plane n: b[n % channels]), or null.
    const void* f1;        // Stage 1 taps in the arithmetic type, correlation order: [taps1] applied along
                           // x and y (sep1), or [taps1_y, taps1_x].
    const void* f3;        // Stage 3 taps, likewise.
    void* mask;            // uint8 [planes, mid_y, mask_pitch]: written (kFlreluForwardMask) or read (kFlreluLinear).
    int64_t planes;        // N * C.
    int64_t channels;      // C.
    int64_t mask_pitch;    // Bytes per mask row: ceil(mid_x * mask_bits / 8).
    int sep1, sep3;        // 1: the stage's filter is 1-D (separable).
    int mode;              // FlreluMode.
    int mask_bits;         // 1 or 2 (see above).
    double gain, slope;    // Leaky ReLU: gain and negative slope.
    double clamp;          // Clamp bound; < 0 disables it.
    int dtype;             // eg::DType of x and y.
    FlreluAxis ax, ay;
    int planes_per_block;  // Filled in by the launcher.
};

// Fills in an axis's derived fields; returns nullptr or what is out of range.
const char* flrelu_axis(FlreluAxis& a);

// Runs the kernel for `p` (axes set up by flrelu_axis). Returns nullptr or an error message.
const char* flrelu_launch(FlreluParams p, void* stream, HostExec exec);

}  // namespace eg
