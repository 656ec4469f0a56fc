// A separable 4-tap FIR (no resampling) from a channels-last image into an NCHW one, on the host: the
// filter after conv2d_resample's transposed convolution, whose output torch leaves channels-last. The
// upfirdn2d kernel reads such an input one plane at a time, a float per cache line; here each output row
// is computed for a chunk of channels at once (32-byte vectors over the channels: a vertical pass into
// a row buffer, then a horizontal one), then written out plane by plane. The CUDA build holds only stubs.

#include <vector>

#include "render_ops.h"
#if !EG_CUDA
#include "host_simd.h"
#endif

namespace eg {

#if EG_CUDA

const char* fir4_nhwc_launch(Fir4Params, HostExec) { return "host-only kernel"; }

#else

namespace {

constexpr int kFirChunk = 64;  // Channels per block (a multiple of the vector width of float and double).

// One block: one output row of one image, for a chunk of channels.
template <class T>
struct Fir4Kernel {
    static void run(const Fir4Params& p, const HostBlock& blk) {
        using V = typename Vec<T>::type;
        constexpr int L = Vec<T>::lanes;
        const int64_t chunks = (p.c + kFirChunk - 1) / kFirChunk;
        const int64_t b = blk.idx_x() / (p.out_h * chunks), oy = blk.idx_x() / chunks % p.out_h;
        const int64_t c0 = blk.idx_x() % chunks * kFirChunk;
        const int64_t cn = p.c - c0 < kFirChunk ? p.c - c0 : kFirChunk;
        const int64_t cb = (cn + L - 1) / L * L;
        const T* x = static_cast<const T*>(p.x) + b * p.x_sb + c0;
        T* y = static_cast<T*>(p.y) + (b * p.c + c0) * p.out_h * p.out_w + oy * p.out_w;
        const T fy[4] = {T(p.fy[0]), T(p.fy[1]), T(p.fy[2]), T(p.fy[3])};
        const T fx[4] = {T(p.fx[0]), T(p.fx[1]), T(p.fx[2]), T(p.fx[3])};

        // Vertical pass: rows oy - pad_y .. + 3 into row[col] (cb channels per column, 3 zero columns of
        // margin each side so that the horizontal pass needs no tests).
        thread_local std::vector<T> row_tls, out_tls;
        std::vector<T>& row_buf = row_tls;
        std::vector<T>& out_buf = out_tls;
        const int64_t margin = 3, width = p.in_w + 2 * margin;
        row_buf.assign(size_t(width * cb), T(0));
        out_buf.resize(size_t(p.out_w * cb));
        T* row = row_buf.data() + margin * cb;
        T* out = out_buf.data();
        for (int i = 0; i < 4; ++i) {
            const int64_t iy = oy + i - p.pad_y;
            if (iy < 0 || iy >= p.in_h || fy[i] == T(0)) continue;
            const T* src = x + iy * p.x_sh;
            for (int64_t col = 0; col < p.in_w; ++col) {
                const T* s = src + col * p.x_sw;
                T* d = row + col * cb;
                for (int64_t l = 0; l < cb; l += L)  // Lanes beyond cn read 0 (d's stay 0).
                    vstore(d + l, vload<V>(d + l) + fy[i] * vload_n<V>(s + l, cn - l));
            }
        }
        // Horizontal pass: out[ox] = sum_j fx[j] row[ox + j - pad_x] (zero outside the image).
        for (int64_t ox = 0; ox < p.out_w; ++ox) {
            const int64_t ix0 = ox - p.pad_x;
            T* o = out + ox * cb;
            for (int64_t l = 0; l < cb; l += L) {
                V acc = V{};
                for (int j = 0; j < 4; ++j) {
                    const int64_t ix = ix0 + j;
                    if (ix < -margin || ix >= p.in_w + margin) continue;
                    acc += fx[j] * vload<V>(row + ix * cb + l);
                }
                vstore(o + l, acc);
            }
        }
        // Out to the planes: 8 channels at a time along the row.
        const int64_t plane = p.out_h * p.out_w;
        for (int64_t cg = 0; cg < cn; cg += 8) {
            const int64_t ge = cg + 8 < cn ? cg + 8 : cn;
            for (int64_t ox = 0; ox < p.out_w; ++ox) {
                const T* o = out + ox * cb;
                for (int64_t c = cg; c < ge; ++c) y[c * plane + ox] = o[c];
            }
        }
    }
};

}  // namespace

const char* fir4_nhwc_launch(Fir4Params p, HostExec exec) {
    if (p.pad_x < 0 || p.pad_y < 0 || p.pad_x > 3 || p.pad_y > 3) return "padding before the image must be 0 to 3";
    const int64_t blocks = p.batch * p.out_h * ((p.c + kFirChunk - 1) / kFirChunk);
    if (blocks <= 0) return nullptr;
    if (blocks > 0x7fffffff) return "too many rows";
    const HostExec e{exec.num_threads, false};
    const Dim3 grid{int(blocks), 1, 1};
    if (p.dtype == kFloat32) return launch<Fir4Kernel<float>, false>(p, grid, Dim3{}, nullptr, e);
    if (p.dtype == kFloat64) return launch<Fir4Kernel<double>, false>(p, grid, Dim3{}, nullptr, e);
    return "unsupported dtype";
}

#endif  // EG_CUDA

}  // namespace eg
