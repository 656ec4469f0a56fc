// bias_act kernels: y = clamp(act(x + b) * gain, -clamp, clamp) and its first and second derivatives,
// one pass over memory each. Compiled by nvcc for CUDA and by the host compiler for the CPU
// (portable.h). No ATen calls.
//
// Gradients are expressed through the saved forward output y where the activation allows it (the
// 'y' activations: y is kept alive by the next layer anyway), else through z = x + b ('x': swish).
// Where |y| reached the clamp the derivative is zero.

#include <type_traits>

#include "bias_act.h"

namespace eg {
namespace {

enum Act : int { kLinear = 1, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <class A> EG_HD A sigmoid(A z) { return A(1) / (A(1) + exp_(-z)); }

template <int ACT, class A>
EG_HD A activate(A z, A alpha) {
    if (ACT == kRelu) return z < A(0) ? A(0) : z;  // NaN stays NaN, as torch.relu.
    // lrelu without a branch (a data-dependent branch on random signs mispredicts half the time: 4x
    // slower on the host). max/min keep a NaN (they return z when a comparison with it fails).
    if (ACT == kLrelu) return (z < A(0) ? A(0) : z) + alpha * (A(0) < z ? A(0) : z);
    if (ACT == kTanh) return tanh_(z);
    if (ACT == kSigmoid) return sigmoid(z);
    if (ACT == kElu) return z > A(0) ? z : expm1_(z);
    if (ACT == kSelu) return z > A(0) ? A(kSeluScale) * z : A(kSeluScale * kSeluAlpha) * expm1_(z);
    if (ACT == kSoftplus) return z > A(20) ? z : log1p_(exp_(z));  // torch's threshold of 20.
    if (ACT == kSwish) return z * sigmoid(z);
    return z;
}

// d(out)/dz from yn = y / gain (the 'y' activations) or from z (swish); gain applied.
template <int ACT, class A>
EG_HD A first_derivative(A yn, A z, A alpha, A gain) {
    if (ACT == kRelu) return yn > A(0) ? gain : A(0);
    if (ACT == kLrelu) return yn > A(0) ? gain : gain * alpha;
    if (ACT == kTanh) return gain * (A(1) - yn * yn);
    if (ACT == kSigmoid) return gain * yn * (A(1) - yn);
    if (ACT == kElu) return yn > A(0) ? gain : gain * (yn + A(1));
    if (ACT == kSelu) return yn > A(0) ? gain * A(kSeluScale) : gain * (yn + A(kSeluScale * kSeluAlpha));
    if (ACT == kSoftplus) return gain * (A(1) - exp_(-yn));
    if (ACT == kSwish) {
        const A s = sigmoid(z);
        return gain * (s + z * s * (A(1) - s));
    }
    return gain;
}

// The derivative of first_derivative with respect to its reference: y for the 'y' activations,
// z for swish.
template <int ACT, class A>
EG_HD A second_derivative(A yn, A z, A gain) {
    if (ACT == kTanh) return A(-2) * yn;
    if (ACT == kSigmoid) return A(1) - A(2) * yn;
    if (ACT == kElu || ACT == kSelu) return yn > A(0) ? A(0) : A(1);
    if (ACT == kSoftplus) return exp_(-yn);
    if (ACT == kSwish) {
        const A s = sigmoid(z);
        return gain * s * (A(1) - s) * (A(2) + z * (A(1) - A(2) * s));
    }
    return A(0);
}

template <class T, int ACT, int MODE>
struct BiasActKernel {
    using A = acc_t<T>;

    // One element; `bias` is the bias of its row.
    static EG_DEVICE void element(const BiasActParams& p, int64_t i, A bias, A alpha, A gain, A bound) {
        if (MODE == kForward) {
            const A v = activate<ACT>(to_acc(static_cast<const T*>(p.x)[i]) + bias, alpha) * gain;
            store(static_cast<T*>(p.out) + i, v < -bound ? -bound : (v > bound ? bound : v));
            return;
        }
        const bool needs_y = ACT != kSwish && ACT != kLinear;
        const A y = (needs_y || p.y) ? to_acc(static_cast<const T*>(p.y)[i]) : A(0);
        const A yn = needs_y ? y / gain : A(0);
        const A z = ACT == kSwish ? to_acc(static_cast<const T*>(p.x)[i]) + bias : A(0);
        A g = MODE == kGrad ? first_derivative<ACT>(yn, z, alpha, gain) : second_derivative<ACT>(yn, z, gain);
        A v = to_acc(static_cast<const T*>(p.dy)[i]) * g;
        if (MODE == kGrad2) v *= to_acc(static_cast<const T*>(p.dd)[i]);
        if (p.y && !(abs_(y) < bound)) v = A(0);  // Saturated by the clamp.
        store(static_cast<T*>(p.out) + i, v);
    }

    template <class Block>
    static EG_DEVICE void run(const BiasActParams& p, const Block& blk) {
        const A alpha = A(p.alpha), gain = A(p.gain);
        // The bound rounded to T, in both directions: the forward clamps to it, so a saturated y equals it
        // exactly, which is how the gradient modes recognise saturation from y alone.
        T bound_t;
        store(&bound_t, p.clamp >= 0 ? A(p.clamp) : A(INFINITY));
        const A bound = to_acc(bound_t);
        const T* b = static_cast<const T*>(p.b);
        const int64_t total = p.rows * p.inner, begin = int64_t(blk.idx_x()) * p.chunk;
        const int64_t end = begin + p.chunk < total ? begin + p.chunk : total;
        if constexpr (std::is_same<Block, HostBlock>::value && MODE == kGrad && (ACT == kRelu || ACT == kLrelu)) {
            // The host's relu / lrelu gradient: a flat loop over y and dy with the pointers in locals, which
            // the compiler vectorises (a select per element instead of a branch that mispredicts on
            // random signs: ~5x faster). Same arithmetic as element().
            const T* y = static_cast<const T*>(p.y);
            const T* dy = static_cast<const T*>(p.dy);
            T* out = static_cast<T*>(p.out);
            const A lo = ACT == kLrelu ? gain * alpha : A(0);
            for (int64_t i = begin; i < end; ++i) {
                const A yv = to_acc(y[i]);
                const A v = to_acc(dy[i]) * (yv / gain > A(0) ? gain : lo);
                store(out + i, abs_(yv) < bound ? v : A(0));
            }
            return;
        }
        if constexpr (!std::is_same<Block, HostBlock>::value) {  // Not in the host's fast path.
            if (p.schedule == kPerElement) {  // Short rows on CUDA: the bias index per element.
                EG_THREADS(blk, tx, ty) {
                    for (int64_t i = begin + tx; i < end; i += blk.dim_x())
                        element(p, i, b ? to_acc(b[i / p.inner % p.channels]) : A(0), alpha, gain, bound);
                }
                return;
            }
        }
        if (p.schedule == kBiasPerRow) {  // Walk the block's range row by row: one bias per row.
            EG_THREADS(blk, tx, ty) {
                for (int64_t i = begin; i < end;) {
                    const int64_t row = i / p.inner, row_end = (row + 1) * p.inner < end ? (row + 1) * p.inner : end;
                    const A bias = b ? to_acc(b[row % p.channels]) : A(0);
                    for (int64_t j = i + pos_mod64(tx - i, blk.dim_x()); j < row_end; j += blk.dim_x())
                        element(p, j, bias, alpha, gain, bound);
                    i = row_end;
                }
            }
        } else {  // kBiasAlongRow (inner == 1): rows of `channels` elements, bias j for column j.
            EG_THREADS(blk, tx, ty) {
                for (int64_t i = begin; i < end;) {
                    const int64_t row0 = i / p.channels * p.channels;
                    const int64_t row_end = row0 + p.channels < end ? row0 + p.channels : end;
                    for (int64_t j = i + pos_mod64(tx - i, blk.dim_x()); j < row_end; j += blk.dim_x())
                        element(p, j, to_acc(b[j - row0]), alpha, gain, bound);
                    i = row_end;
                }
            }
        }
    }

    static EG_HD int64_t pos_mod64(int64_t a, int64_t m) { return ((a % m) + m) % m; }
};

template <class T, int ACT>
const char* launch_act(const BiasActParams& p, Dim3 grid, Dim3 block, void* stream, const HostExec& exec) {
    constexpr bool emu = std::is_same<T, float>::value;  // Emulating CUDA blocks: float32 only.
    switch (p.mode) {
        case kForward: return launch<BiasActKernel<T, ACT, kForward>, emu>(p, grid, block, stream, exec);
        case kGrad: return launch<BiasActKernel<T, ACT, kGrad>, emu>(p, grid, block, stream, exec);
        case kGrad2:
            if (ACT == kLinear || ACT == kRelu || ACT == kLrelu) return "this activation has no second derivative";
            return launch<BiasActKernel<T, ACT, kGrad2>, emu>(p, grid, block, stream, exec);
    }
    return "unknown mode";
}

template <class T>
const char* launch_dtype(const BiasActParams& p, Dim3 grid, Dim3 block, void* stream, const HostExec& exec) {
    switch (p.act) {
        case kLinear: return launch_act<T, kLinear>(p, grid, block, stream, exec);
        case kRelu: return launch_act<T, kRelu>(p, grid, block, stream, exec);
        case kLrelu: return launch_act<T, kLrelu>(p, grid, block, stream, exec);
        case kTanh: return launch_act<T, kTanh>(p, grid, block, stream, exec);
        case kSigmoid: return launch_act<T, kSigmoid>(p, grid, block, stream, exec);
        case kElu: return launch_act<T, kElu>(p, grid, block, stream, exec);
        case kSelu: return launch_act<T, kSelu>(p, grid, block, stream, exec);
        case kSoftplus: return launch_act<T, kSoftplus>(p, grid, block, stream, exec);
        case kSwish: return launch_act<T, kSwish>(p, grid, block, stream, exec);
    }
    return "unknown activation";
}

}  // namespace

const char* bias_act_launch(BiasActParams p, void* stream, HostExec exec) {
    const int64_t numel = p.rows * p.inner;
    if (numel == 0) return nullptr;
    if (p.gain == 0) return "gain must be non-zero";
    // CUDA: 1-D blocks of 256 threads, each thread a few elements; rows shorter than a warp take the
    // bias index per element. The host's fast path: blocks of 16K elements, one "thread" each, walking
    // its rows (vectorisable loops); emulation runs the CUDA shape.
    const bool cuda_shape = EG_CUDA || exec.emulate_cuda_blocks;
    const Dim3 block{256, 1, 1};
    p.chunk = cuda_shape ? 4 * 256 : 16384;
    if (p.b != nullptr && p.inner == 1)
        p.schedule = kBiasAlongRow;
    else
        p.schedule = cuda_shape && p.inner < 32 ? kPerElement : kBiasPerRow;
    if (!cuda_shape && numel < 65536) exec.num_threads = 1;  // Not worth waking threads.
    const int64_t blocks = (numel + p.chunk - 1) / p.chunk;
    if (blocks > 0x7fffffff) return "tensor too large";
    const Dim3 grid{int(blocks), 1, 1};
    switch (p.dtype) {
        case kFloat32: return launch_dtype<float>(p, grid, block, stream, exec);
        case kFloat64: return launch_dtype<double>(p, grid, block, stream, exec);
        case kFloat16: return launch_dtype<f16>(p, grid, block, stream, exec);
        case kBFloat16: return launch_dtype<bf16>(p, grid, block, stream, exec);
    }
    return "unsupported dtype";
}

}  // namespace eg
