// Winograd F(4x4, 3x3) transforms of a 3x3 convolution (stride 1, zero padding 1), host only: the
// input tiles' transform V = B^T d B and the output transform y = A^T m A (Lavin & Gray 2016, points
// 0, +-1, +-2), and their adjoints for the backward pass. The products between them (per tile
// position, a matrix product over the channels) are torch's; see winograd.py. Tiles are 6x6 input
// pixels at a stride of 4, giving 4x4 output pixels; a tile's input starts one pixel before its output
// (the padding), and pixels outside the image read 0.
//
// Vectorised over the channels with 32-byte vectors (GCC / clang vector extensions). A block is one
// tile row of one image and a chunk of channels. Channels-last images (unit channel stride, a whole
// number of vectors) are read and written in place; other layouts (NCHW) go through a per-block staging
// buffer that holds the tile row's pixels channels-last. The CUDA build holds only stubs.

#include <vector>

#include "render_ops.h"
#if !EG_CUDA
#include "host_simd.h"
#endif

namespace eg {

#if EG_CUDA

const char* winograd_input_launch(WinogradInputParams, HostExec) { return "host-only kernel"; }
const char* winograd_output_launch(WinogradOutputParams, HostExec) { return "host-only kernel"; }

#else

namespace {

// r = B^T d (6 values).
template <class V>
inline void bt6(const V* d, V* r) {
    r[0] = 4 * d[0] - 5 * d[2] + d[4];
    r[1] = -4 * (d[1] + d[2]) + d[3] + d[4];
    r[2] = 4 * (d[1] - d[2]) - d[3] + d[4];
    r[3] = 2 * (d[3] - d[1]) - d[2] + d[4];
    r[4] = 2 * (d[1] - d[3]) - d[2] + d[4];
    r[5] = 4 * d[1] - 5 * d[3] + d[5];
}
// r = B g (6 values): the adjoint of bt6.
template <class V>
inline void b6(const V* g, V* r) {
    r[0] = 4 * g[0];
    r[1] = -4 * g[1] + 4 * g[2] - 2 * g[3] + 2 * g[4] + 4 * g[5];
    r[2] = -5 * g[0] - 4 * g[1] - 4 * g[2] - g[3] - g[4];
    r[3] = g[1] - g[2] + 2 * g[3] - 2 * g[4] - 5 * g[5];
    r[4] = g[0] + g[1] + g[2] + g[3] + g[4];
    r[5] = g[5];
}
// r = A^T m (4 values).
template <class V>
inline void at6(const V* m, V* r) {
    const V a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    r[0] = m[0] + a + c;
    r[1] = b + 2 * d;
    r[2] = a + 4 * c;
    r[3] = b + 8 * d + m[5];
}
// r = A g (6 values from 4): the adjoint of at6.
template <class V>
inline void a6(const V* g, V* r) {
    r[0] = g[0];
    r[1] = g[0] + g[1] + g[2] + g[3];
    r[2] = g[0] - g[1] + g[2] - g[3];
    r[3] = g[0] + 2 * g[1] + 4 * g[2] + 8 * g[3];
    r[4] = g[0] - 2 * g[1] + 4 * g[2] - 8 * g[3];
    r[5] = g[3];
}

// Separable 2-D transform of one vector of channels: out[a][b] = sum_ij M[a][i] M[b][j] in[i][j], with
// F the 1-D transform (R x S: S inputs, R outputs). in(i, j) and out(a, b, value) are callables.
template <int R, int S, class V, class F, class In, class Out>
inline void transform2d(F f, In in, Out out) {
    V t[R][S];
    for (int j = 0; j < S; ++j) {
        V col[S], res[R];
        for (int i = 0; i < S; ++i) col[i] = in(i, j);
        f(col, res);
        for (int a = 0; a < R; ++a) t[a][j] = res[a];
    }
    for (int a = 0; a < R; ++a) {
        V res[R];
        f(t[a], res);
        for (int b = 0; b < R; ++b) out(a, b, res[b]);
    }
}

template <class T>
using Vt = typename Vec<T>::type;

constexpr int kChunkVectors = 8;  // Vectors of channels per block (NCHW staging).

// The image side of a transform: either read (input transform, adjoint of the output transform) or
// written (output transform, adjoint of the input transform); `rows` image rows from row0, columns
// 0 .. 4 TX + extra, for channels c0 .. c0 + cn. Staging is channels-last, CB channels per pixel (cn
// rounded up to whole vectors, the rest zero), zero outside the image.
template <class T>
struct Stage {
    std::vector<T> buf;
    int64_t width = 0, cb = 0;
    T* pixel(int64_t i, int64_t col) { return buf.data() + (i * width + col) * cb; }
};

template <class T, class P>
void stage_in(Stage<T>& s, const P& p, const T* x, int64_t b, int64_t row0, int rows, int64_t col0, int64_t width,
              int64_t c0, int64_t cn, int64_t cb) {
    s.width = width, s.cb = cb;
    s.buf.resize(size_t(rows * width * cb));
    // Columns inside the image: [lo, hi) of the staged row.
    const int64_t lo = col0 < 0 ? -col0 : 0, hi = p.w - col0 < width ? p.w - col0 : width;
    for (int i = 0; i < rows; ++i) {
        const int64_t yy = row0 + i;
        T* row = s.buf.data() + i * width * cb;
        if (yy < 0 || yy >= p.h || hi <= lo) {
            std::memset(row, 0, sizeof(T) * width * cb);
            continue;
        }
        std::memset(row, 0, sizeof(T) * lo * cb);
        std::memset(row + hi * cb, 0, sizeof(T) * (width - hi) * cb);
        if (cb != cn)
            for (int64_t col = lo; col < hi; ++col) std::memset(row + col * cb + cn, 0, sizeof(T) * (cb - cn));
        const T* src = x + b * p.sb + c0 * p.sc + yy * p.sh + col0 * p.sw;
        // Groups of 8 channels, each a pass along the row: 8 sequential read streams (the planes of an
        // NCHW image are often a multiple of 4 KiB apart, so more streams at once thrash the caches' sets).
        for (int64_t cg = 0; cg < cn; cg += 8) {
            const int64_t ge = cg + 8 < cn ? cg + 8 : cn;
            for (int64_t col = lo; col < hi; ++col) {
                T* d = row + col * cb;
                const T* sp = src + col * p.sw;
                for (int64_t c = cg; c < ge; ++c) d[c] = sp[c * p.sc];
            }
        }
    }
}

template <class T, class P>
void unstage_out(Stage<T>& s, const P& p, T* y, int64_t b, int64_t row0, int rows, int64_t col0, int64_t c0,
                 int64_t cn, bool accumulate) {
    const int64_t lo = col0 < 0 ? -col0 : 0, hi = p.w - col0 < s.width ? p.w - col0 : s.width;
    for (int i = 0; i < rows; ++i) {
        const int64_t yy = row0 + i;
        if (yy < 0 || yy >= p.h || hi <= lo) continue;
        const T* row = s.buf.data() + i * s.width * s.cb;
        T* dst = y + b * p.sb + c0 * p.sc + yy * p.sh + col0 * p.sw;
        if (p.sc == 1) {  // Channels-last: one contiguous run per pixel.
            for (int64_t col = lo; col < hi; ++col) {
                T* d = dst + col * p.sw;
                const T* src = row + col * s.cb;
                if (accumulate) {
#pragma omp simd
                    for (int64_t c = 0; c < cn; ++c) d[c] += src[c];
                } else {
#pragma omp simd
                    for (int64_t c = 0; c < cn; ++c) d[c] = src[c];
                }
            }
            continue;
        }
        constexpr int64_t kBlock = 16;
        for (int64_t cs = lo; cs < hi; cs += kBlock) {
            const int64_t ce = cs + kBlock < hi ? cs + kBlock : hi;
            for (int64_t c = 0; c < cn; ++c) {
                T* dc = dst + c * p.sc;
                const T* sc = row + c;
                if (accumulate) {
                    for (int64_t col = cs; col < ce; ++col) dc[col * p.sw] += sc[col * s.cb];
                } else {
                    for (int64_t col = cs; col < ce; ++col) dc[col * p.sw] = sc[col * s.cb];
                }
            }
        }
    }
}

// Input transform (mode 0): V[t] = B^T d_t B. Its adjoint (mode 1): the image gradient
// dx = sum_t (B dV_t B^T placed at the tile), written (not accumulated) by tile rows of one parity at a
// time so that overlapping rows are never written concurrently (the caller runs parity 0, then 1).
template <class T>
struct WinogradInputKernel {
    static void run(const WinogradInputParams& p, const HostBlock& blk) {
        using V = Vt<T>;
        constexpr int L = Vec<T>::lanes;
        const int64_t chunk = int64_t(kChunkVectors) * L;
        const int64_t chunks = (p.c + chunk - 1) / chunk;
        const int64_t row_blocks = p.adjoint ? (p.ty + 1 - p.parity) / 2 : p.tyn;
        const int64_t b = blk.idx_x() / (row_blocks * chunks);
        const int64_t rb = blk.idx_x() / chunks % row_blocks, k = blk.idx_x() % chunks;
        const int64_t ty = p.adjoint ? 2 * rb + p.parity : p.ty0 + rb;
        const int64_t tyl = ty - p.ty0;  // The tile row within V.
        const int64_t c0 = k * chunk, cn = p.c - c0 < chunk ? p.c - c0 : chunk;
        const int64_t cb = (cn + L - 1) / L * L;
        const int64_t pos_stride = p.batch * p.tyn * p.tx * p.c;
        T* v = static_cast<T*>(p.v);
        const bool direct = p.sc == 1 && p.c % L == 0;
        const int64_t width = 4 * p.tx + 2;
        thread_local Stage<T> st_tls;
        Stage<T>& st = st_tls;  // (A plain reference: every use of a thread_local calls its TLS wrapper.)
        const T* x = static_cast<const T*>(p.x);
        T* dx = static_cast<T*>(p.dx);
        if (!p.adjoint) {
            if (!direct) stage_in(st, p, x, b, 4 * ty - 1, 6, -1, width, c0, cn, cb);
            for (int64_t tx = 0; tx < p.tx; ++tx) {
                T* out = v + ((b * p.tyn + tyl) * p.tx + tx) * p.c + c0;
                for (int64_t l = 0; l < cb; l += L) {
                    auto in = [&](int i, int j) -> V {
                        if (!direct) return vload<V>(st.pixel(i, 4 * tx + j) + l);
                        const int64_t yy = 4 * ty - 1 + i, xx = 4 * tx - 1 + j;
                        if (yy < 0 || yy >= p.h || xx < 0 || xx >= p.w) return V{};
                        return vload<V>(x + b * p.sb + yy * p.sh + xx * p.sw + c0 + l);
                    };
                    auto put = [&](int a, int bb, V r) {
                        T* dst = out + (a * 6 + bb) * pos_stride + l;
                        vstore_n(dst, r, cn - l);
                    };
                    transform2d<6, 6, V>([](const V* d, V* r) { bt6(d, r); }, in, put);
                }
            }
            return;
        }
        // Adjoint: each tile row's 6 image rows, staged (always: tiles overlap by 2 columns), then added
        // into dx: rows 4 ty - 1 .. 4 ty + 4. The parity split keeps concurrent tile rows 2 rows apart.
        st.width = width, st.cb = cb;
        st.buf.assign(size_t(6 * width * cb), T(0));
        for (int64_t tx = 0; tx < p.tx; ++tx) {
            const T* src = v + ((b * p.tyn + tyl) * p.tx + tx) * p.c + c0;
            for (int64_t l = 0; l < cb; l += L) {
                auto in = [&](int a, int bb) -> V {
                    return vload_n<V>(src + (a * 6 + bb) * pos_stride + l, cn - l);
                };
                auto add = [&](int i, int j, V r) {
                    T* d = st.pixel(i, 4 * tx + j) + l;
                    vstore(d, vload<V>(d) + r);
                };
                transform2d<6, 6, V>([](const V* g, V* r) { b6(g, r); }, in, add);
            }
        }
        // Rows shared with the tile row above (4 ty - 1, 4 ty) are added; the first tile row of a
        // parity pass writes its rows fresh only where no other tile row reaches (the caller zero-fills dx).
        unstage_out(st, p, dx, b, 4 * ty - 1, 6, -1, c0, cn, true);
    }
};

// Output transform (mode 0): y = A^T m_t A per tile, cropped. Its adjoint (mode 1): dM_t = A dY_t A^T.
template <class T>
struct WinogradOutputKernel {
    static void run(const WinogradOutputParams& p, const HostBlock& blk) {
        using V = Vt<T>;
        constexpr int L = Vec<T>::lanes;
        const int64_t chunk = int64_t(kChunkVectors) * L;
        const int64_t chunks = (p.c + chunk - 1) / chunk;
        const int64_t b = blk.idx_x() / (p.tyn * chunks), tyl = blk.idx_x() / chunks % p.tyn;
        const int64_t ty = p.ty0 + tyl, k = blk.idx_x() % chunks;
        const int64_t c0 = k * chunk, cn = p.c - c0 < chunk ? p.c - c0 : chunk;
        const int64_t cb = (cn + L - 1) / L * L;
        const int64_t pos_stride = p.batch * p.tyn * p.tx * p.c;
        T* m = static_cast<T*>(p.m);
        T* y = static_cast<T*>(p.y);
        const bool direct = p.sc == 1 && p.c % L == 0;
        const int64_t width = 4 * p.tx;
        const int rows = p.h - ty * 4 < 4 ? int(p.h - ty * 4) : 4;
        thread_local Stage<T> st_tls;
        Stage<T>& st = st_tls;  // (A plain reference: every use of a thread_local calls its TLS wrapper.)
        if (!p.adjoint) {
            if (!direct) {
                st.width = width, st.cb = cb;
                st.buf.assign(size_t(4 * width * cb), T(0));
            }
            for (int64_t tx = 0; tx < p.tx; ++tx) {
                const T* src = m + ((b * p.tyn + tyl) * p.tx + tx) * p.c + c0;
                const int cols = p.w - tx * 4 < 4 ? int(p.w - tx * 4) : 4;
                for (int64_t l = 0; l < cb; l += L) {
                    auto in = [&](int a, int bb) -> V {
                        return vload_n<V>(src + (a * 6 + bb) * pos_stride + l, cn - l);
                    };
                    auto put = [&](int i, int j, V r) {
                        if (!direct) return vstore(st.pixel(i, 4 * tx + j) + l, r);
                        if (i < rows && j < cols)
                            vstore(y + b * p.sb + (4 * ty + i) * p.sh + (4 * tx + j) * p.sw + c0 + l, r);
                    };
                    transform2d<4, 6, V>([](const V* mm, V* r) { at6(mm, r); }, in, put);
                }
            }
            if (!direct) unstage_out(st, p, y, b, 4 * ty, rows, 0, c0, cn, false);
            return;
        }
        // Adjoint: dY's tile (4 x 4, zero outside the image) -> dM_t = A g A^T (6 x 6).
        if (!direct) stage_in(st, p, static_cast<const T*>(p.y), b, 4 * ty, 4, 0, width, c0, cn, cb);
        for (int64_t tx = 0; tx < p.tx; ++tx) {
            T* dst0 = m + ((b * p.tyn + tyl) * p.tx + tx) * p.c + c0;
            for (int64_t l = 0; l < cb; l += L) {
                auto in = [&](int i, int j) -> V {
                    if (!direct) return vload<V>(st.pixel(i, 4 * tx + j) + l);
                    const int64_t yy = 4 * ty + i, xx = 4 * tx + j;
                    if (yy >= p.h || xx >= p.w) return V{};
                    return vload<V>(y + b * p.sb + yy * p.sh + xx * p.sw + c0 + l);
                };
                auto put = [&](int a, int bb, V r) {
                    T* dst = dst0 + (a * 6 + bb) * pos_stride + l;
                    vstore_n(dst, r, cn - l);
                };
                transform2d<6, 4, V>([](const V* g, V* r) { a6(g, r); }, in, put);
            }
        }
    }
};

template <class K, class P>
const char* run_blocks(const P& p, int64_t blocks, const HostExec& exec) {
    if (blocks <= 0) return nullptr;
    if (blocks > 0x7fffffff) return "too many tiles";
    return launch<K, false>(p, Dim3{int(blocks), 1, 1}, Dim3{}, nullptr, HostExec{exec.num_threads, false});
}

template <class P>
int64_t chunks_of(const P& p, int lanes) {
    const int64_t chunk = int64_t(kChunkVectors) * lanes;
    return (p.c + chunk - 1) / chunk;
}

}  // namespace

const char* winograd_input_launch(WinogradInputParams p, HostExec exec) {
    if (p.ty != (p.h + 3) / 4 || p.tx != (p.w + 3) / 4) return "tile counts do not match the image";
    if (p.adjoint && p.parity != 0 && p.parity != 1) return "parity must be 0 or 1";
    if (p.ty0 < 0 || p.tyn < 0 || p.ty0 + p.tyn > p.ty || (p.adjoint && (p.ty0 != 0 || p.tyn != p.ty)))
        return "tile rows out of range (the adjoint takes all of them)";
    const int64_t rows = p.adjoint ? (p.ty + 1 - p.parity) / 2 : p.tyn;
    if (p.dtype == kFloat32)
        return run_blocks<WinogradInputKernel<float>>(p, p.batch * rows * chunks_of(p, Vec<float>::lanes), exec);
    if (p.dtype == kFloat64)
        return run_blocks<WinogradInputKernel<double>>(p, p.batch * rows * chunks_of(p, Vec<double>::lanes), exec);
    return "unsupported dtype";
}

const char* winograd_output_launch(WinogradOutputParams p, HostExec exec) {
    if (p.ty != (p.h + 3) / 4 || p.tx != (p.w + 3) / 4) return "tile counts do not match the image";
    if (p.ty0 < 0 || p.tyn < 0 || p.ty0 + p.tyn > p.ty) return "tile rows out of range";
    if (p.dtype == kFloat32)
        return run_blocks<WinogradOutputKernel<float>>(p, p.batch * p.tyn * chunks_of(p, Vec<float>::lanes), exec);
    if (p.dtype == kFloat64)
        return run_blocks<WinogradOutputKernel<double>>(p, p.batch * p.tyn * chunks_of(p, Vec<double>::lanes), exec);
    return "unsupported dtype";
}

#endif  // EG_CUDA

}  // namespace eg
