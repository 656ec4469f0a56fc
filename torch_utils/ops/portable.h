// One kernel source for CUDA and for the host.
//
// A kernel is a struct with a static `run(params, block)` that holds one thread block's code. It is
// written as CUDA code is: block-uniform statements, plus "thread sections" (EG_THREADS) in which every
// thread of the block does its part, separated by barriers (EG_SYNC). Under nvcc each thread runs the
// code once with its threadIdx. Under the host compiler the block's threads become a loop inside each
// section, so a barrier is simply the boundary between two sections; values a thread keeps across a
// barrier live in EG_PER_THREAD arrays (one slot per thread on the host, a register on the GPU).
// `__shared__` arrays become arrays local to the block's call.
//
// The host runs the blocks of a grid in parallel with OpenMP (torch's own runtime) and knows two block
// shapes: HostBlock (one thread per block: each "thread" strides over the whole tile, which makes the
// inner loops long, unit-stride and vectorisable: the fast path), and EmuBlock (the CUDA launch's block
// shape, threads looped: it runs the GPU's tiling and barrier structure on the CPU so that tests can
// check the device algorithm without a GPU).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define EG_CUDA 1
#define EG_HD __host__ __device__ __forceinline__
#define EG_DEVICE __device__ __forceinline__
#define EG_SHARED __shared__
#define EG_RESTRICT __restrict__
#else
#define EG_CUDA 0
#define EG_HD inline
#define EG_DEVICE inline
#define EG_SHARED
#define EG_RESTRICT __restrict__
#endif

namespace eg {

// ------------------------------------------------------------------------------------------------
// Storage types and conversion to the arithmetic type (float, or double for double).

#if EG_CUDA
using f16 = __half;
using bf16 = __nv_bfloat16;
EG_DEVICE float to_acc(f16 v) { return __half2float(v); }
EG_DEVICE float to_acc(bf16 v) { return __bfloat162float(v); }
EG_DEVICE void store(f16* p, float v) { *p = __float2half_rn(v); }
EG_DEVICE void store(bf16* p, float v) { *p = __float2bfloat16_rn(v); }
#else
#if defined(__FLT16_MAX__)
using f16 = _Float16;  // IEEE binary16 with hardware conversions where the target has them (F16C).
EG_HD float to_acc(f16 v) { return static_cast<float>(v); }
EG_HD void store(f16* p, float v) { *p = static_cast<f16>(v); }
#else
struct f16 { uint16_t bits; };  // IEEE binary16, converted in software.
EG_HD float to_acc(f16 v) {
    const uint32_t sign = uint32_t(v.bits & 0x8000) << 16, exp = (v.bits >> 10) & 0x1f, man = v.bits & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else {  // Zero or subnormal: exact in float.
        float f = float(man) * (1.0f / 16777216.0f);
        std::memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
EG_HD void store(f16* p, float v) {  // Round to nearest even.
    uint32_t x;
    std::memcpy(&x, &v, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    x &= 0x7fffffffu;
    uint16_t h;
    if (x > 0x7f800000u) {
        h = uint16_t(sign | 0x7e00);
    } else if (x >= 0x477ff000u) {  // Rounds to or beyond 65520: infinity.
        h = uint16_t(sign | 0x7c00);
    } else if (x < 0x38800000u) {  // Below the smallest normal: round in float arithmetic.
        float a;
        std::memcpy(&a, &x, 4);
        h = uint16_t(sign | uint32_t(__builtin_nearbyintf(a * 16777216.0f)));
    } else {
        const uint32_t r = x + 0x0fffu + ((x >> 13) & 1);
        h = uint16_t(sign | ((r - 0x38000000u) >> 13));
    }
    p->bits = h;
}
#endif
struct bf16 { uint16_t bits; };  // bfloat16: the top half of a float.
EG_HD float to_acc(bf16 v) {
    const uint32_t bits = uint32_t(v.bits) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
EG_HD void store(bf16* p, float v) {  // Round to nearest even; NaN stays NaN.
    uint32_t x;
    std::memcpy(&x, &v, 4);
    const bool nan = (x & 0x7fffffffu) > 0x7f800000u;
    p->bits = nan ? uint16_t((x >> 16) | 0x40) : uint16_t((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}
#endif

EG_HD float to_acc(float v) { return v; }
EG_HD double to_acc(double v) { return v; }
EG_HD void store(float* p, float v) { *p = v; }
EG_HD void store(double* p, double v) { *p = v; }

template <class T> struct Acc { using type = float; };  // Arithmetic type for a storage type.
template <> struct Acc<double> { using type = double; };
template <class T> using acc_t = typename Acc<T>::type;

// dtype codes shared with the Python wrappers.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// ------------------------------------------------------------------------------------------------
// Launch geometry and block descriptors.

struct Dim3 {
    int x = 1, y = 1, z = 1;
};

#if EG_CUDA
struct CudaBlock {  // The running block, as CUDA sees it.
    EG_DEVICE int idx_x() const { return blockIdx.x; }
    EG_DEVICE int idx_y() const { return blockIdx.y; }
    EG_DEVICE int idx_z() const { return blockIdx.z; }
    EG_DEVICE int dim_x() const { return blockDim.x; }
    EG_DEVICE int dim_y() const { return blockDim.y; }
    EG_DEVICE int num_threads() const { return blockDim.x * blockDim.y; }
};
#endif

struct HostBlock {  // One thread per block: the host's fast path. Dimensions are compile-time 1.
    int ix, iy, iz;
    EG_HD int idx_x() const { return ix; }
    EG_HD int idx_y() const { return iy; }
    EG_HD int idx_z() const { return iz; }
    static constexpr int dim_x() { return 1; }
    static constexpr int dim_y() { return 1; }
    static constexpr int num_threads() { return 1; }
};

struct EmuBlock {  // A CUDA-shaped block run on the host, its threads as loops.
    int ix, iy, iz, dx, dy;
    EG_HD int idx_x() const { return ix; }
    EG_HD int idx_y() const { return iy; }
    EG_HD int idx_z() const { return iz; }
    EG_HD int dim_x() const { return dx; }
    EG_HD int dim_y() const { return dy; }
    EG_HD int num_threads() const { return dx * dy; }
};

constexpr int kMaxBlockThreads = 1024;

// EG_THREADS(blk, tx, ty) { ... }: a thread section. EG_SYNC(): a barrier between sections.
// EG_PER_THREAD(T, name): a value each thread keeps across barriers; EG_MINE(name, blk, tx, ty) is it.
#if EG_CUDA
#define EG_THREADS(blk, tx, ty) if ([[maybe_unused]] const int tx = threadIdx.x, ty = threadIdx.y; true)
#define EG_SYNC() __syncthreads()
#define EG_PER_THREAD(T, name) T name[1]
#define EG_MINE(name, blk, tx, ty) name[0]
#else
#define EG_THREADS(blk, tx, ty)                        \
    for (int ty = 0; ty < (blk).dim_y(); ++ty)         \
        for (int tx = 0; tx < (blk).dim_x(); ++tx)
#define EG_SYNC() ((void)0)
#define EG_PER_THREAD(T, name) T name[::eg::kMaxBlockThreads]
#define EG_MINE(name, blk, tx, ty) name[(ty) * (blk).dim_x() + (tx)]
#endif

// How the host runs a launch: threads for the OpenMP loop over blocks, and whether to emulate the
// CUDA block shape (tests) rather than take the one-thread-per-block fast path.
struct HostExec {
    int num_threads = 1;
    bool emulate_cuda_blocks = false;
};

#if EG_CUDA
template <class K, class P>
__global__ void kernel_entry(P p) {
    K::run(p, CudaBlock{});
}

// Launches K on `stream` (a cudaStream_t passed from Python as an integer). Returns an error string,
// or nullptr on success.
template <class K, bool EMULATE = true, class P>
inline const char* launch(const P& p, Dim3 grid, Dim3 block, void* stream, const HostExec&) {
    kernel_entry<K, P><<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), 0,
                         static_cast<cudaStream_t>(stream)>>>(p);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
#else
// Runs K's blocks on the host. `block` is the CUDA block shape, used only when emulating it (the
// kernels instantiate the emulation only where tests use it, EMULATE, to keep builds short).
template <class K, bool EMULATE = true, class P>
inline const char* launch(const P& p, Dim3 grid, Dim3 block, void*, const HostExec& exec) {
    const int64_t gx = grid.x, gxy = gx * grid.y, n = gxy * grid.z;
    const int threads = exec.num_threads > 0 ? exec.num_threads : 1;
    if (!exec.emulate_cuda_blocks) {
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 1 && threads > 1)
        for (int64_t i = 0; i < n; ++i)
            K::run(p, HostBlock{int(i % gx), int(i % gxy / gx), int(i / gxy)});
        return nullptr;
    }
    if constexpr (EMULATE) {
        if (block.x * block.y > kMaxBlockThreads || block.z != 1)
            return "emulated block shape exceeds the kernel limits";
#pragma omp parallel for schedule(static) num_threads(threads) if (n > 1 && threads > 1)
        for (int64_t i = 0; i < n; ++i)
            K::run(p, EmuBlock{int(i % gx), int(i % gxy / gx), int(i / gxy), block.x, block.y});
        return nullptr;
    }
    (void)block;
    return "CUDA block emulation is built for float32 only";
}
#endif

// Math on the arithmetic types (nvcc and the host compiler both know these C functions).
EG_HD float exp_(float v) { return ::expf(v); }
EG_HD double exp_(double v) { return ::exp(v); }
EG_HD float expm1_(float v) { return ::expm1f(v); }
EG_HD double expm1_(double v) { return ::expm1(v); }
EG_HD float log1p_(float v) { return ::log1pf(v); }
EG_HD double log1p_(double v) { return ::log1p(v); }
EG_HD float tanh_(float v) { return ::tanhf(v); }
EG_HD double tanh_(double v) { return ::tanh(v); }
EG_HD float abs_(float v) { return ::fabsf(v); }
EG_HD double abs_(double v) { return ::fabs(v); }

EG_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }
EG_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
EG_HD int pos_mod(int a, int b) { return ((a % b) + b) % b; }
EG_HD int imin(int a, int b) { return a < b ? a : b; }
EG_HD int imax(int a, int b) { return a > b ? a : b; }

}  // namespace eg
