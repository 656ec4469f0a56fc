// upfirdn2d kernels: upsample, pad, FIR filter, downsample in one pass, in polyphase form (upfirdn2d.h).
// Compiled by nvcc for CUDA and by the host compiler for the CPU (portable.h). No ATen calls.
//
// A block computes a tile of outputs for one or more planes: it stages the input tile it needs in shared
// memory (zeros outside the image, so padding and cropping need no tests in the inner loops), then every
// thread computes its outputs from there. 2-D filters are applied directly; 1-D filters separably, through
// a second shared buffer. Kernels with compile-time up, down and filter size (StyleGAN2's 4-tap filter at
// up 2, down 2 and no resampling) unroll their tap loops; the generic kernel takes them at run time.

#include <type_traits>

#include "upfirdn2d.h"

namespace eg {
namespace {

#if EG_CUDA
constexpr int kSmemBytes = 40 * 1024;   // Static shared memory per block.
constexpr int kTileW = 64, kTileH = 32;  // Output tile a block aims for.
#else
constexpr int kSmemBytes = 160 * 1024;   // A block's scratch on the host's stack.
constexpr int kTileW = 256, kTileH = 64;
#endif
constexpr int kStridedTileW = 64, kStridedTileH = 32;  // Host, channels-last input.
constexpr int kCudaSmemBytes = 40 * 1024, kCudaTileW = 64, kCudaTileH = 32;  // For emulation on the host.
const Dim3 kCudaBlock{32, 8, 1};

constexpr int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

// A compile-time value when C > 0, else the run-time one.
template <int C> EG_HD int ct(int rt) { return C > 0 ? C : rt; }

EG_HD int align4(int n) { return (n + 3) & ~3; }  // Keeps the buffers carved from shared memory aligned.

// Stages rows [iy0, iy0 + th) x columns [ix0, ix0 + tw) of plane `src` into `tile` (zeros outside).
template <class T, class A, class Block>
EG_DEVICE void load_tile(A* tile, const T* src, int64_t sy, int64_t sx, int in_w, int in_h, int ix0, int iy0, int tw,
                         int th, const Block& blk) {
    const int lo = imin(imax(-ix0, 0), tw), hi = imax(imin(in_w - ix0, tw), lo);
    EG_THREADS(blk, tx, ty) {
        for (int r = ty; r < th; r += blk.dim_y()) {
            A* dst = tile + r * tw;
            const int iy = iy0 + r;
            if (iy < 0 || iy >= in_h) {
                for (int c = tx; c < tw; c += blk.dim_x()) dst[c] = A(0);
                continue;
            }
            const T* row = src + int64_t(iy) * sy;
            for (int c = tx; c < lo; c += blk.dim_x()) dst[c] = A(0);
            if (sx == 1) {  // Rows of a contiguous plane: the unit-stride copy.
                for (int c = lo + pos_mod(tx - lo, blk.dim_x()); c < hi; c += blk.dim_x()) dst[c] = to_acc(row[ix0 + c]);
            } else {  // Channels-last input: a gather along the row.
                for (int c = lo + pos_mod(tx - lo, blk.dim_x()); c < hi; c += blk.dim_x())
                    dst[c] = to_acc(row[int64_t(ix0 + c) * sx]);
            }
            for (int c = hi + pos_mod(tx - hi, blk.dim_x()); c < tw; c += blk.dim_x()) dst[c] = A(0);
        }
    }
}

// The first element of input plane `plane` (= n * C + c).
template <class T>
EG_HD const T* plane_ptr(const Upfirdn2dParams& p, int64_t plane) {
    return static_cast<const T*>(p.x) + plane / p.channels * p.x_sn + plane % p.channels * p.x_sc;
}

// sum_{sy, sx} w[sy][sx] * src[sy * stride + sx], rows accumulated in four independent chains (a single
// chain of fused multiply-adds would be bound by their latency, not their throughput).
template <class A>
EG_HD A dot2d(const A* w, const A* src, int nx, int ny, int stride) {
    A acc[4] = {A(0), A(0), A(0), A(0)};
    for (int sy = 0; sy < ny; ++sy)
        for (int sx = 0; sx < nx; ++sx) acc[sy & 3] += w[sy * nx + sx] * src[sy * stride + sx];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// 2-D filter. UX..KY > 0 fix up, down and filter size at compile time; 0 takes them from the params.
template <class T, int UX, int UY, int DX, int DY, int KX, int KY>
struct Upfirdn2dKernel {
    using A = acc_t<T>;
    static constexpr int kGX = UX && DX ? UX / gcd(UX, DX) : 0, kGY = UY && DY ? UY / gcd(UY, DY) : 0;
    static constexpr int kSX = UX && DX ? DX / gcd(UX, DX) : 0, kSY = UY && DY ? DY / gcd(UY, DY) : 0;
    static constexpr int kNX = UX && KX ? (KX + UX - 1) / UX : 0, kNY = UY && KY ? (KY + UY - 1) / UY : 0;

    template <class Block>
    static EG_DEVICE void run(const Upfirdn2dParams& p, const Block& blk) {
        const int GX = ct<kGX>(p.ax.groups), GY = ct<kGY>(p.ay.groups);
        const int SX = ct<kSX>(p.ax.step), SY = ct<kSY>(p.ay.step);
        const int NX = ct<kNX>(p.ax.phase_taps), NY = ct<kNY>(p.ay.phase_taps);
        const int UXr = ct<UX>(p.ax.up), UYr = ct<UY>(p.ay.up), KXr = ct<KX>(p.ax.taps), KYr = ct<KY>(p.ay.taps);
        const int TQX = p.ax.tile_q, TQY = p.ay.tile_q, TW = p.ax.tile_in, TH = p.ay.tile_in;

        EG_SHARED alignas(16) unsigned char smem[kSmemBytes];
        A* pf = reinterpret_cast<A*>(smem);  // Phase filters [GY][GX][NY][NX].
        const int npf = GY * GX * NY * NX;
        A* tile = pf + align4(npf);  // Input tile [TH][TW].

        const int q0x = blk.idx_y() * TQX, q0y = blk.idx_z() * TQY;
        const int ix0 = q0x * SX + p.ax.imin, iy0 = q0y * SY + p.ay.imin;
        const int nqy = imin(TQY, ceil_div(p.out_h, GY) - q0y);
        const int nq_full = imax(imin(TQX, p.out_w / GX - q0x), 0);
        const int nq_all = imin(TQX, ceil_div(p.out_w, GX) - q0x);
        int offx[kMaxUp], offy[kMaxUp];
        for (int r = 0; r < GX; ++r) offx[r] = p.ax.off[r];
        for (int r = 0; r < GY; ++r) offy[r] = p.ay.off[r];

        const A* f = static_cast<const A*>(p.f);
        EG_THREADS(blk, tx, ty) {
            for (int i = ty * blk.dim_x() + tx; i < npf; i += blk.num_threads()) {
                const int sx = i % NX, sy = i / NX % NY, rx = i / (NX * NY) % GX, ry = i / (NX * NY * GX);
                const int kx = p.ax.k0[rx] + sx * UXr, ky = p.ay.k0[ry] + sy * UYr;
                pf[i] = kx < KXr && ky < KYr ? f[ky * KXr + kx] : A(0);
            }
        }

        const int64_t plane_end = imin64(p.planes, (int64_t(blk.idx_x()) + 1) * p.planes_per_block);
        for (int64_t plane = int64_t(blk.idx_x()) * p.planes_per_block; plane < plane_end; ++plane) {
            EG_SYNC();  // The phase filters are ready; the previous plane's tile is no longer read.
            load_tile(tile, plane_ptr<T>(p, plane), p.x_sy, p.x_sx, p.in_w, p.in_h, ix0, iy0, TW, TH, blk);
            EG_SYNC();
            T* out = static_cast<T*>(p.y) + plane * p.out_h * p.out_w + q0x * GX;
            EG_THREADS(blk, tx, ty) {
                for (int qy = ty; qy < nqy; qy += blk.dim_y()) {
                    for (int ry = 0; ry < GY; ++ry) {
                        const int oy = (q0y + qy) * GY + ry;
                        if (oy >= p.out_h) break;
                        T* EG_RESTRICT orow = out + int64_t(oy) * p.out_w;
                        const A* trow = tile + (offy[ry] + qy * SY) * TW;
                        const A* w = pf + ry * GX * NY * NX;
                        for (int qx = tx; qx < nq_full; qx += blk.dim_x()) {  // Whole groups: no tests.
                            for (int rx = 0; rx < GX; ++rx) {
                                const A* src = trow + offx[rx] + qx * SX;
                                const A* wr = w + rx * NY * NX;
                                store(orow + qx * GX + rx, dot2d(wr, src, NX, NY, TW));
                            }
                        }
                        for (int qx = nq_full + tx; qx < nq_all; qx += blk.dim_x()) {  // The last, partial group.
                            for (int rx = 0; rx < GX && (q0x + qx) * GX + rx < p.out_w; ++rx) {
                                const A* src = trow + offx[rx] + qx * SX;
                                const A* wr = w + rx * NY * NX;
                                store(orow + qx * GX + rx, dot2d(wr, src, NX, NY, TW));
                            }
                        }
                    }
                }
            }
        }
    }

    static EG_HD int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
};

// 1-D filter applied along x (input tile -> `mid`), then along y (`mid` -> output).
template <class T>
struct Upfirdn2dSeparableKernel {
    using A = acc_t<T>;

    template <class Block>
    static EG_DEVICE void run(const Upfirdn2dParams& p, const Block& blk) {
        const int GX = p.ax.groups, GY = p.ay.groups, SX = p.ax.step, SY = p.ay.step;
        const int NX = p.ax.phase_taps, NY = p.ay.phase_taps, K = p.ax.taps;
        const int TQX = p.ax.tile_q, TQY = p.ay.tile_q, TW = p.ax.tile_in, TH = p.ay.tile_in;
        const int MW = TQX * GX;  // Width of the x-filtered tile.

        EG_SHARED alignas(16) unsigned char smem[kSmemBytes];
        A* pfx = reinterpret_cast<A*>(smem);        // [GX][NX]
        A* pfy = pfx + align4(GX * NX);     // [GY][NY]
        A* tile = pfy + align4(GY * NY);    // [TH][TW]
        A* mid = tile + align4(TH * TW);    // [TH][MW]

        const int q0x = blk.idx_y() * TQX, q0y = blk.idx_z() * TQY;
        const int ix0 = q0x * SX + p.ax.imin, iy0 = q0y * SY + p.ay.imin;
        const int nqy = imin(TQY, ceil_div(p.out_h, GY) - q0y);
        const int nqx = imin(TQX, ceil_div(p.out_w, GX) - q0x);
        const int ow = imin(MW, p.out_w - q0x * GX);  // Valid output columns of the tile.

        const A* f = static_cast<const A*>(p.f);
        EG_THREADS(blk, tx, ty) {
            for (int i = ty * blk.dim_x() + tx; i < GX * NX + GY * NY; i += blk.num_threads()) {
                const bool is_x = i < GX * NX;
                const int j = is_x ? i : i - GX * NX, n = is_x ? NX : NY;
                const int k = (is_x ? p.ax.k0[j / n] + j % n * p.ax.up : p.ay.k0[j / n] + j % n * p.ay.up);
                (is_x ? pfx : pfy)[j] = k < K ? f[k] : A(0);
            }
        }

        const int64_t plane_end = p.planes < (int64_t(blk.idx_x()) + 1) * p.planes_per_block
                                      ? p.planes : (int64_t(blk.idx_x()) + 1) * p.planes_per_block;
        for (int64_t plane = int64_t(blk.idx_x()) * p.planes_per_block; plane < plane_end; ++plane) {
            EG_SYNC();
            load_tile(tile, plane_ptr<T>(p, plane), p.x_sy, p.x_sx, p.in_w, p.in_h, ix0, iy0, TW, TH, blk);
            EG_SYNC();
            EG_THREADS(blk, tx, ty) {  // Along x, for every row of the input tile.
                for (int r = ty; r < TH; r += blk.dim_y()) {
                    for (int qx = tx; qx < nqx; qx += blk.dim_x()) {
                        for (int rx = 0; rx < GX; ++rx) {
                            const A* src = tile + r * TW + p.ax.off[rx] + qx * SX;
                            const A* w = pfx + rx * NX;
                            mid[r * MW + qx * GX + rx] = dot2d(w, src, 1, NX, 1);
                        }
                    }
                }
            }
            EG_SYNC();
            T* out = static_cast<T*>(p.y) + plane * p.out_h * p.out_w + q0x * GX;
            EG_THREADS(blk, tx, ty) {  // Along y, into the output.
                for (int qy = ty; qy < nqy; qy += blk.dim_y()) {
                    for (int ry = 0; ry < GY; ++ry) {
                        const int oy = (q0y + qy) * GY + ry;
                        if (oy >= p.out_h) break;
                        const A* src = mid + (p.ay.off[ry] + qy * SY) * MW;
                        const A* w = pfy + ry * NY;
                        T* EG_RESTRICT orow = out + int64_t(oy) * p.out_w;
                        for (int c = tx; c < ow; c += blk.dim_x()) {
                            store(orow + c, dot2d(w, src + c, 1, NY, MW));
                        }
                    }
                }
            }
        }
    }
};

// Bytes of shared memory a tile needs.
int tile_bytes(const Upfirdn2dParams& p, int acc_size) {
    const int TW = p.ax.tile_in, TH = p.ay.tile_in;
    int elems;
    if (p.separable) {
        elems = align4(p.ax.groups * p.ax.phase_taps) + align4(p.ay.groups * p.ay.phase_taps) +
                align4(TH * TW) + TH * p.ax.tile_q * p.ax.groups;
    } else {
        elems = align4(p.ax.groups * p.ay.groups * p.ax.phase_taps * p.ay.phase_taps) + TH * TW;
    }
    return elems * acc_size;
}

void set_tile(Upfirdn2dAxis& a, int tile_q) {
    a.tile_q = tile_q;
    a.tile_in = (tile_q - 1) * a.step + a.phase_taps + a.span;
}

template <class T>
const char* launch_dtype(Upfirdn2dParams& p, void* stream, HostExec exec) {
    using A = acc_t<T>;
    const bool cuda_shape = EG_CUDA || exec.emulate_cuda_blocks;
    const int smem = cuda_shape ? kCudaSmemBytes : kSmemBytes;
    int tile_w = cuda_shape ? kCudaTileW : kTileW, tile_h = cuda_shape ? kCudaTileH : kTileH;
    if (!cuda_shape && p.x_sx != 1) {  // Strided rows: a tile whose cache lines stay cached across planes.
        tile_w = kStridedTileW;
        tile_h = kStridedTileH;
    }

    // The largest tile (up to the target) whose buffers fit; halve its height first, then its width.
    int tqx = imax(1, imin(ceil_div(tile_w, p.ax.groups), ceil_div(p.out_w, p.ax.groups)));
    int tqy = imax(1, imin(ceil_div(tile_h, p.ay.groups), ceil_div(p.out_h, p.ay.groups)));
    for (;;) {
        set_tile(p.ax, tqx);
        set_tile(p.ay, tqy);
        if (tile_bytes(p, sizeof(A)) <= smem) break;
        if (tqy > 1) tqy = (tqy + 1) / 2;
        else if (tqx > 1) tqx = (tqx + 1) / 2;
        else return "the filter is too large for the kernel's tile buffer";
    }
    const int tiles_x = ceil_div(p.out_w, tqx * p.ax.groups), tiles_y = ceil_div(p.out_h, tqy * p.ay.groups);
    if (tiles_x > 65535 || tiles_y > 65535) return "image too large";

    // Planes per block: on the host enough work per block to amortise its set-up, while keeping every
    // thread busy; on CUDA one.
    int64_t ppb = 1;
    if (!cuda_shape && p.planes * p.out_h * p.out_w < 32768) exec.num_threads = 1;  // Not worth waking threads.
    if (!cuda_shape) {
        const int64_t outputs = int64_t(imin(tqx * p.ax.groups, p.out_w)) * imin(tqy * p.ay.groups, p.out_h);
        const int64_t blocks_wanted = 4 * int64_t(exec.num_threads > 0 ? exec.num_threads : 1);
        const int64_t by_work = (8192 + outputs - 1) / outputs;
        const int64_t by_threads = (p.planes * tiles_x * tiles_y + blocks_wanted - 1) / blocks_wanted / (tiles_x * tiles_y);
        ppb = by_work < by_threads ? by_work : by_threads;
        if (ppb < 1) ppb = 1;
    }
    const int64_t plane_blocks = (p.planes + ppb - 1) / ppb;
    if (plane_blocks > 0x7fffffff) return "too many planes";
    p.planes_per_block = int(ppb);
    const Dim3 grid{int(plane_blocks), tiles_x, tiles_y};

    constexpr bool emu = std::is_same<T, float>::value;  // Emulating CUDA blocks: float32 only.
    if (p.separable) return launch<Upfirdn2dSeparableKernel<T>, emu>(p, grid, kCudaBlock, stream, exec);
    const Upfirdn2dAxis &ax = p.ax, &ay = p.ay;
    const bool k4 = ax.taps == 4 && ay.taps == 4;
    if (k4 && ax.up == 1 && ay.up == 1 && ax.down == 1 && ay.down == 1)
        return launch<Upfirdn2dKernel<T, 1, 1, 1, 1, 4, 4>, emu>(p, grid, kCudaBlock, stream, exec);
    if (k4 && ax.up == 2 && ay.up == 2 && ax.down == 1 && ay.down == 1)
        return launch<Upfirdn2dKernel<T, 2, 2, 1, 1, 4, 4>, emu>(p, grid, kCudaBlock, stream, exec);
    if (k4 && ax.up == 1 && ay.up == 1 && ax.down == 2 && ay.down == 2)
        return launch<Upfirdn2dKernel<T, 1, 1, 2, 2, 4, 4>, emu>(p, grid, kCudaBlock, stream, exec);
    return launch<Upfirdn2dKernel<T, 0, 0, 0, 0, 0, 0>, emu>(p, grid, kCudaBlock, stream, exec);
}

}  // namespace

const char* upfirdn2d_axis(Upfirdn2dAxis& a, int up, int down, int pad0, int taps) {
    if (up < 1 || up > kMaxUp) return "up factor out of range (1..8)";
    if (down < 1 || down > kMaxDown) return "down factor out of range (1..16)";
    if (taps < 1 || taps > kMaxTaps) return "filter size out of range (1..64)";
    a = Upfirdn2dAxis{};
    a.up = up;
    a.down = down;
    a.pad0 = pad0;
    a.taps = taps;
    const int g = gcd(up, down);
    a.groups = up / g;
    a.step = down / g;
    a.phase_taps = (taps + up - 1) / up;
    int i0[kMaxUp] = {};
    for (int r = 0; r < a.groups; ++r) {
        const int t = r * down - pad0;  // Padded, upsampled position of output r, minus the padding.
        a.k0[r] = pos_mod(-t, up);
        i0[r] = (t + a.k0[r]) / up;    // Exact: t + k0 is a multiple of up.
    }
    a.imin = i0[0];
    for (int r = 1; r < a.groups; ++r) a.imin = imin(a.imin, i0[r]);
    a.span = 0;
    for (int r = 0; r < a.groups; ++r) {
        a.off[r] = i0[r] - a.imin;
        a.span = imax(a.span, a.off[r]);
    }
    return nullptr;
}

const char* upfirdn2d_launch(Upfirdn2dParams p, void* stream, HostExec exec) {
    if (p.planes == 0 || p.out_w <= 0 || p.out_h <= 0) return nullptr;
    switch (p.dtype) {
        case kFloat32: return launch_dtype<float>(p, stream, exec);
        case kFloat64: return launch_dtype<double>(p, stream, exec);
        case kFloat16: return launch_dtype<f16>(p, stream, exec);
        case kBFloat16: return launch_dtype<bf16>(p, stream, exec);
    }
    return "unsupported dtype";
}

}  // namespace eg
