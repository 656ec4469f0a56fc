// bias_act fused kernels: the parameters shared by the kernels (bias_act_kernels.cu) and the Python
// binding (bias_act_plugin.cpp).
#pragma once

#include <cstdint>

#include "portable.h"

namespace eg {

enum BiasActMode : int {
    kForward = 0,  // out = clamp(act(x + b) * gain, -clamp, clamp)
    kGrad = 1,     // out = dy * d(out)/dz, z = x + b (0 where the clamp saturates)
    kGrad2 = 2,    // out = dy * dd * d(d(out)/dz)/d(ref): the second-order term, ref = y or z
};

enum BiasActSchedule : int {
    kBiasPerRow = 0,    // Walk the rows of [rows, inner]; one bias per row.
    kBiasAlongRow = 1,  // inner == 1: rows of `channels` elements, one bias per column.
    kPerElement = 2,    // The bias index of each element by division (CUDA, short rows).
};

struct BiasActParams {
    const void* x;      // [rows, inner]: the input (forward; gradients of 'x' activations), or null.
    const void* b;      // [channels]: the bias of row r is b[r % channels], or null.
    const void* y;      // [rows, inner]: the forward output (gradients of 'y' activations, clamp), or null.
    const void* dy;     // [rows, inner]: the first factor of the gradient modes, or null.
    const void* dd;     // [rows, inner]: the second factor of kGrad2, or null.
    void* out;          // [rows, inner]: the result.
    int64_t rows;       // Rows of the [rows, inner] view (outer dimensions times channels).
    int64_t inner;      // Elements per row (the dimensions after the bias dimension).
    int64_t channels;   // Bias length.
    double alpha;       // Activation parameter (lrelu slope).
    double gain;        // Output scale; != 0.
    double clamp;       // Clamp bound; < 0 disables it.
    int act;            // Activation index (1 linear .. 9 swish), as in bias_act.activation_funcs.
    int mode;           // BiasActMode.
    int dtype;          // eg::DType of x, y, dy, dd, out and b.
    // Launch geometry (filled in by the launcher).
    int64_t chunk;      // Elements per block (a flat range).
    int schedule;       // BiasActSchedule: how a block finds each element's bias.
};

// Runs one bias_act kernel. Returns nullptr, or a message saying what went wrong.
const char* bias_act_launch(BiasActParams p, void* stream, HostExec exec);

}  // namespace eg
