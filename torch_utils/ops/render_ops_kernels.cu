// Renderer host kernels: a vectorisable softplus and its gradient, the OSGDecoder's output split
// (sigma; sigmoid colour features with headroom), and the one-pass tri-plane gather (the mean over
// the planes of bilinear samples). Compiled by the host compiler for the CPU (portable.h). The CUDA
// build holds only stubs: on the GPU the renderer keeps torch's kernels (the Python side never asks).
//
// float32 uses its own exp and log1p (a Cody-Waite reduction with a degree-7 polynomial; log1p from
// 2 atanh(t / (2 + t)), t in [0, 1]), accurate to a few 1e-8 absolute, which the compiler vectorises;
// float64 uses the C library's.

#include "render_ops.h"

#if !EG_CUDA && defined(__GNUC__) && !defined(__clang__)
// Comparisons may be if-converted into selects (GCC otherwise keeps them as branches, in case they
// trap, and vectorises none of the loops below). Nothing here inspects floating-point exceptions.
#pragma GCC optimize("no-trapping-math")
#endif

namespace eg {

#if EG_CUDA

const char* softplus_launch(SoftplusParams, HostExec) { return "host-only kernel"; }
const char* decoder_tail_launch(DecoderTailParams, HostExec) { return "host-only kernel"; }
const char* plane_gather_launch(PlaneGatherParams, HostExec) { return "host-only kernel"; }
const char* plane_scatter_launch(PlaneScatterParams, HostExec) { return "host-only kernel"; }
const char* composite_launch(CompositeParams, HostExec) { return "host-only kernel"; }
const char* importance_launch(ImportanceParams, HostExec) { return "host-only kernel"; }

#else

namespace {

constexpr int64_t kChunk = 16384;  // Elements (or rows, points) per host block.

// exp(a) for float: 0 below -87.3, saturating at 2.1e38 above 88.3; NaN is not preserved (callers
// select it through).
inline float exp_fast(float x) {
    float a = x < -87.3f ? -87.3f : x;
    a = a > 88.3f ? 88.3f : a;
    const float n = __builtin_rintf(a * 1.44269504088896341f);
    float r = __builtin_fmaf(n, -0.693145751953125f, a);
    r = __builtin_fmaf(n, -1.428606765330187045e-06f, r);
    // Taylor terms to r^7 on |r| <= 0.347: truncation below 2e-9 relative.
    float p = 1.0f / 5040.0f;
    p = __builtin_fmaf(p, r, 1.0f / 720.0f);
    p = __builtin_fmaf(p, r, 1.0f / 120.0f);
    p = __builtin_fmaf(p, r, 1.0f / 24.0f);
    p = __builtin_fmaf(p, r, 1.0f / 6.0f);
    p = __builtin_fmaf(p, r, 0.5f);
    p = __builtin_fmaf(p, r, 1.0f);
    p = __builtin_fmaf(p, r, 1.0f);
    const int32_t bits = (int32_t(n) + 127) << 23;
    float s;
    std::memcpy(&s, &bits, 4);
    return x < -87.3f ? 0.0f : p * s;
}

// log(1 + t) for t in [0, 1]: 2 atanh(s), s = t / (2 + t) in [0, 1/3], the series to s^13.
inline float log1p_unit(float t) {
    const float s = t / (2.0f + t), z = s * s;
    float p = 1.0f / 13.0f;
    p = __builtin_fmaf(p, z, 1.0f / 11.0f);
    p = __builtin_fmaf(p, z, 1.0f / 9.0f);
    p = __builtin_fmaf(p, z, 1.0f / 7.0f);
    p = __builtin_fmaf(p, z, 1.0f / 5.0f);
    p = __builtin_fmaf(p, z, 1.0f / 3.0f);
    p = __builtin_fmaf(p, z, 1.0f);
    return 2.0f * s * p;
}

inline float softplus(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float v = (x > 0.0f ? x : 0.0f) + log1p_unit(exp_fast(-ax));
    return x > 20.0f ? x : (x == x ? v : x);  // torch's threshold; NaN stays NaN.
}
inline double softplus(double x) { return x > 20.0 ? x : (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }

// sigmoid(x) = 1 / (1 + exp(-x)), from e = exp(-|x|) so that nothing overflows.
inline float sigmoid(float x) {
    const float e = exp_fast(x < 0.0f ? x : -x), r = 1.0f / (1.0f + e);
    return x == x ? (x >= 0.0f ? r : e * r) : x;
}
inline double sigmoid(double x) {
    const double e = std::exp(-std::fabs(x)), r = 1.0 / (1.0 + e);
    return x >= 0.0 ? r : (x < 0.0 ? e * r : x);
}

template <class T>
struct SoftplusKernel {
    static void run(const SoftplusParams& p, const HostBlock& blk) {
        const int64_t begin = int64_t(blk.idx_x()) * kChunk;
        const int64_t end = begin + kChunk < p.n ? begin + kChunk : p.n;
        const T* x = static_cast<const T*>(p.x);
        T* out = static_cast<T*>(p.out);
        if (p.mode == kSoftplusForward) {
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) out[i] = softplus(x[i]);
        } else {
            const T* dy = static_cast<const T*>(p.dy);
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) out[i] = dy[i] * sigmoid(x[i]);
        }
    }
};

template <class T>
struct DecoderTailKernel {
    static void run(const DecoderTailParams& p, const HostBlock& blk) {
        const int64_t begin = int64_t(blk.idx_x()) * (kChunk / 32);
        const int64_t end = begin + kChunk / 32 < p.rows ? begin + kChunk / 32 : p.rows;
        const T scale = T(p.scale), shift = T(p.shift);
        const T* src = static_cast<const T*>(p.src);
        T* sigma = static_cast<T*>(p.sigma);
        T* rgb = static_cast<T*>(p.rgb);
        for (int64_t r = begin; r < end; ++r) {
            const T* s = src + r * p.src_stride;
            T* o = rgb + r * p.rgb_stride;
            sigma[r * p.sigma_stride] = s[0];
#pragma omp simd
            for (int64_t k = 0; k < p.c; ++k) o[k] = sigmoid(s[1 + k]) * scale + shift;
        }
    }
};

// A block of points in two phases: first each point's texel rows and weights (grid_sample's: distances
// to the opposite corner, divided by the number of planes; out-of-plane corners dropped), prefetching
// the rows, then the weighted sums. The rows of a large table come from DRAM at random, so issuing all
// of a block's loads before using any of them hides most of their latency (2-3x for a 100 MB table).
template <class T, int C>
struct PlaneGatherKernel {
    static constexpr int64_t kPoints = 32;
    static constexpr int kCorners = 4 * kMaxPlanes;

    static void run(const PlaneGatherParams& p, const HostBlock& blk) {
        const int64_t total = p.n * p.m, begin = int64_t(blk.idx_x()) * kPoints;
        const int64_t end = begin + kPoints < total ? begin + kPoints : total;
        const int64_t c = C > 0 ? C : p.c;
        const T* table = static_cast<const T*>(p.table);
        const T* coords = static_cast<const T*>(p.coords);
        T* out = static_cast<T*>(p.out);
        const T scale = T(p.scale), fw = T(p.w), fh = T(p.h), inv_planes = T(1) / T(p.planes);
        T axes[kMaxPlanes][3][2];
        for (int q = 0; q < kMaxPlanes; ++q)
            for (int k = 0; k < 3; ++k)
                for (int j = 0; j < 2; ++j) axes[q][k][j] = T(p.axes[q][k][j]);
        int64_t rows[kPoints][kCorners];
        T weights[kPoints][kCorners];
        int count[kPoints];
        const int64_t row_bytes = c * int64_t(sizeof(T));
        for (int64_t i = begin; i < end; ++i) {
            const int64_t n = i / p.m, b = i - begin;
            const T x = coords[3 * i] * scale, y = coords[3 * i + 1] * scale, z = coords[3 * i + 2] * scale;
            int cnt = 0;
            // The backward's sparse form of the gather (as plane_gather._corners gives it), if asked for:
            // 4 entries per plane, corners (x0, y0), (x1, y0), (x0, y1), (x1, y1).
            int64_t* rows64 = p.rows_out && p.rows_int64 ? static_cast<int64_t*>(p.rows_out) + i * 4 * p.planes : nullptr;
            int32_t* rows32 = p.rows_out && !p.rows_int64 ? static_cast<int32_t*>(p.rows_out) + i * 4 * p.planes : nullptr;
            T* wout = p.weights_out ? static_cast<T*>(p.weights_out) + i * 4 * p.planes : nullptr;
            if (wout)
                for (int j = 0; j < 4 * p.planes; ++j) {
                    wout[j] = T(0);
                    if (rows64) rows64[j] = 0;
                    if (rows32) rows32[j] = 0;
                }
            for (int q = 0; q < p.planes; ++q) {
                const T u = x * axes[q][0][0] + y * axes[q][1][0] + z * axes[q][2][0];
                const T v = x * axes[q][0][1] + y * axes[q][1][1] + z * axes[q][2][1];
                const T ix = ((u + T(1)) * fw - T(1)) / T(2), iy = ((v + T(1)) * fh - T(1)) / T(2);
                const T x0 = std::floor(ix), y0 = std::floor(iy), x1 = x0 + T(1), y1 = y0 + T(1);
                const T wx[2] = {x1 - ix, ix - x0}, wy[2] = {y1 - iy, iy - y0};
                // NaN or far-away coordinates fail these tests, so the casts below only see small values.
                const bool in_x[2] = {x0 >= T(0) && x0 <= fw - T(1), x1 >= T(0) && x1 <= fw - T(1)};
                const bool in_y[2] = {y0 >= T(0) && y0 <= fh - T(1), y1 >= T(0) && y1 <= fh - T(1)};
                if (!(in_x[0] || in_x[1]) || !(in_y[0] || in_y[1])) continue;
                const int64_t base = n * p.sn + q * p.sp + int64_t(y0) * p.sh + int64_t(x0) * p.sw;
                for (int cy = 0; cy < 2; ++cy) {
                    for (int cx = 0; cx < 2; ++cx) {
                        if (!(in_x[cx] && in_y[cy])) continue;
                        const int64_t row = base + cy * p.sh + cx * p.sw;
                        const char* addr = reinterpret_cast<const char*>(table + row * c);
                        for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(addr + off);
                        __builtin_prefetch(addr + row_bytes - 1);
                        rows[b][cnt] = row;
                        weights[b][cnt] = wx[cx] * wy[cy] * inv_planes;
                        ++cnt;
                        if (wout) {
                            const int j = 4 * q + 2 * cy + cx;
                            wout[j] = weights[b][cnt - 1];
                            if (rows64) rows64[j] = row;
                            if (rows32) rows32[j] = int32_t(row);
                        }
                    }
                }
            }
            count[b] = cnt;
        }
        for (int64_t i = begin; i < end; ++i) {
            const int64_t b = i - begin;
            T* o = out + i * c;
            T acc[C > 0 ? C : 1];
            T* a = C > 0 ? acc : o;
            for (int64_t k = 0; k < c; ++k) a[k] = T(0);
            for (int j = 0; j < count[b]; ++j) {
                const T wgt = weights[b][j];
                const T* row = table + rows[b][j] * c;
#pragma omp simd
                for (int64_t k = 0; k < c; ++k) a[k] += wgt * row[k];
            }
            if (C > 0)
                for (int64_t k = 0; k < c; ++k) o[k] = a[k];
        }
    }
};

// The gather's transpose for one block of table rows [r0, r1): zero them, then scan all entries in
// batches of points, first collecting the entries that fall in the range (prefetching their rows for
// writing), then adding weight * grad to them. Rows of a large table are touched at random, so issuing
// a batch's row loads before the adds hides their latency, as in PlaneGatherKernel.
template <class T, class I, int C>
struct PlaneScatterKernel {
    static constexpr int64_t kPoints = 64;
    static constexpr int kEntries = kPoints * 4 * kMaxPlanes;

    static void run(const PlaneScatterParams& p, const HostBlock& blk) {
        const int64_t r0 = int64_t(blk.idx_x()) * p.rows_per_block;
        const int64_t r1 = r0 + p.rows_per_block < p.table_rows ? r0 + p.rows_per_block : p.table_rows;
        if (r0 >= r1) return;
        const int64_t c = C > 0 ? C : p.c, k = p.k;
        const I* rows = static_cast<const I*>(p.rows);
        const T* weights = static_cast<const T*>(p.weights);
        const T* grad = static_cast<const T*>(p.grad);
        T* out = static_cast<T*>(p.out);
        for (int64_t i = r0 * c, e = r1 * c; i < e; ++i) out[i] = T(0);
        const int64_t row_bytes = c * int64_t(sizeof(T));
        int64_t hit_row[kEntries], hit_point[kEntries];
        T hit_w[kEntries];
        for (int64_t begin = 0; begin < p.points; begin += kPoints) {
            const int64_t end = begin + kPoints < p.points ? begin + kPoints : p.points;
            int cnt = 0;
            for (int64_t j = begin * k, e = end * k; j < e; ++j) {
                const int64_t r = int64_t(rows[j]);
                const T w = weights[j];
                if (r < r0 || r >= r1 || w == T(0)) continue;
                char* addr = reinterpret_cast<char*>(out + r * c);
                for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(addr + off, 1);
                __builtin_prefetch(addr + row_bytes - 1, 1);
                hit_row[cnt] = r;
                hit_point[cnt] = j / k;
                hit_w[cnt] = w;
                ++cnt;
            }
            for (int h = 0; h < cnt; ++h) {
                T* o = out + hit_row[h] * c;
                const T* g = grad + hit_point[h] * c;
                const T w = hit_w[h];
#pragma omp simd
                for (int64_t q = 0; q < c; ++q) o[q] += w * g[q];
            }
        }
    }
};

inline float exp_of(float v) { return exp_fast(v); }
inline double exp_of(double v) { return std::exp(v); }

template <class T>
struct CompositeKernel {
    struct Sample {
        T d;      // Depth.
        int32_t k, s;  // Set and index in it.
    };

    // Sorts a[0:n] by depth (insertion sort: already sorted sets cost one pass; a NaN stays put).
    static void sort(Sample* a, int n) {
        for (int i = 1; i < n; ++i) {
            const Sample v = a[i];
            int j = i;
            while (j > 0 && a[j - 1].d > v.d) {
                a[j] = a[j - 1];
                --j;
            }
            a[j] = v;
        }
    }

    static void run(const CompositeParams& p, const HostBlock& blk) {
        constexpr int64_t kRays = 64;
        const int64_t begin = int64_t(blk.idx_x()) * kRays, end = begin + kRays < p.rays ? begin + kRays : p.rays;
        const int64_t c = p.c;
        Sample buf[3][kMaxRaySamples];  // The union so far, the next union, the next set.
        T sig[kMaxRaySamples], alpha[kMaxRaySamples];
        for (int64_t r = begin; r < end; ++r) {
            // Each set sorted on its own, then merged into the union (ties: the earlier set first).
            int n = 0, cur = 0;
            for (int k = 0; k < p.sets; ++k) {
                const int sk = int(p.samples[k]);
                const T* d = static_cast<const T*>(p.depths[k]) + r * sk;
                Sample* set = buf[2];
                for (int s = 0; s < sk; ++s) set[s] = Sample{d[s], k, s};
                sort(set, sk);
                const Sample* a = buf[cur];
                Sample* out = buf[1 - cur];
                int i = 0, j = 0, o = 0;
                while (i < n && j < sk) out[o++] = set[j].d < a[i].d ? set[j++] : a[i++];
                while (i < n) out[o++] = a[i++];
                while (j < sk) out[o++] = set[j++];
                n += sk;
                cur = 1 - cur;
            }
            const Sample* a = buf[cur];
            for (int i = 0; i < n; ++i)
                sig[i] = static_cast<const T*>(p.densities[a[i].k])[r * p.samples[a[i].k] + a[i].s];
            for (int i = 0; i + 1 < n; ++i) {
                const T mid = softplus((sig[i] + sig[i + 1]) / T(2) - T(1));
                alpha[i] = T(1) - exp_of(-(mid * (a[i + 1].d - a[i].d)));
            }
            T* rgb = static_cast<T*>(p.rgb) + r * c;
            for (int64_t q = 0; q < c; ++q) rgb[q] = T(0);
            T trans = T(1), wsum = T(0), dsum = T(0), prev = T(0);
            for (int i = 0; i < n; ++i) {
                T w = T(0);
                if (i + 1 < n) {
                    w = alpha[i] * trans;
                    trans *= T(1) - alpha[i] + T(1e-10);
                    wsum += w;
                    dsum += w * ((a[i].d + a[i + 1].d) / T(2));
                }
                const T sw = (prev + w) / T(2);
                prev = w;
                const T* col = static_cast<const T*>(p.colors[a[i].k]) + (r * p.samples[a[i].k] + a[i].s) * c;
#pragma omp simd
                for (int64_t q = 0; q < c; ++q) rgb[q] += sw * col[q];
            }
            const T back = p.white_back ? T(1) - wsum : T(0);
#pragma omp simd
            for (int64_t q = 0; q < c; ++q) rgb[q] = (rgb[q] + back) * T(2) - T(1);
            const T depth = dsum / wsum;
            static_cast<T*>(p.depth)[r] = depth == depth ? depth : T(INFINITY);
            static_cast<T*>(p.weight_sum)[r] = wsum;
        }
    }
};

template <class T>
struct ImportanceKernel {
    static void run(const ImportanceParams& p, const HostBlock& blk) {
        constexpr int64_t kRays = 64;
        const int64_t begin = int64_t(blk.idx_x()) * kRays, end = begin + kRays < p.rays ? begin + kRays : p.rays;
        const int64_t s = p.s, nb = s - 3;  // nb pdf entries; bins 0 .. nb.
        T cdf[kMaxRaySamples];
        const T eps = T(1e-5);
        for (int64_t r = begin; r < end; ++r) {
            const T* z = static_cast<const T*>(p.z) + r * s;
            const T* w = static_cast<const T*>(p.w) + r * (s - 1);
            const T* u = static_cast<const T*>(p.u) + r * p.k;
            T* out = static_cast<T*>(p.out) + r * p.k;
            // Smoothed weight j (j = 1 .. s-3): (max(w[j-1], w[j]) + max(w[j], w[j+1])) / 2 + 0.01, + eps.
            T total = T(0);
            for (int64_t j = 1; j <= nb; ++j) {
                const T a = w[j - 1] > w[j] ? w[j - 1] : w[j], b = w[j] > w[j + 1] ? w[j] : w[j + 1];
                cdf[j] = ((a + b) / T(2) + T(0.01)) + eps;
                total += cdf[j];
            }
            // cdf = [0, cumsum(pdf)], pdf = weight / total.
            cdf[0] = T(0);
            T run = T(0);
            for (int64_t j = 1; j <= nb; ++j) {
                run += cdf[j] / total;
                cdf[j] = run;
            }
            for (int64_t q = 0; q < p.k; ++q) {
                const T v = u[q];
                // searchsorted(cdf, v, right=True): the first index with cdf > v (nb + 1 if none).
                int64_t lo = 0, hi = nb + 1;
                while (lo < hi) {
                    const int64_t mid = (lo + hi) / 2;
                    if (cdf[mid] > v) hi = mid;
                    else lo = mid + 1;
                }
                const int64_t below = lo - 1 > 0 ? lo - 1 : 0, above = lo < nb ? lo : nb;
                const T c0 = cdf[below], c1 = cdf[above];
                const T b0 = (z[below] + z[below + 1]) * T(0.5), b1 = (z[above] + z[above + 1]) * T(0.5);
                T denom = c1 - c0;
                denom = denom < eps ? T(1) : denom;
                out[q] = b0 + (v - c0) / denom * (b1 - b0);
            }
        }
    }
};

template <class K, class P>
const char* run_blocks(const P& p, int64_t blocks, const HostExec& exec) {
    if (blocks <= 0) return nullptr;
    if (blocks > 0x7fffffff) return "too many elements";
    return launch<K, false>(p, Dim3{int(blocks), 1, 1}, Dim3{}, nullptr, HostExec{exec.num_threads, false});
}

}  // namespace

const char* softplus_launch(SoftplusParams p, HostExec exec) {
    const int64_t blocks = (p.n + kChunk - 1) / kChunk;
    if (p.dtype == kFloat32) return run_blocks<SoftplusKernel<float>>(p, blocks, exec);
    if (p.dtype == kFloat64) return run_blocks<SoftplusKernel<double>>(p, blocks, exec);
    return "unsupported dtype";
}

const char* decoder_tail_launch(DecoderTailParams p, HostExec exec) {
    const int64_t per = kChunk / 32, blocks = (p.rows + per - 1) / per;
    if (p.dtype == kFloat32) return run_blocks<DecoderTailKernel<float>>(p, blocks, exec);
    if (p.dtype == kFloat64) return run_blocks<DecoderTailKernel<double>>(p, blocks, exec);
    return "unsupported dtype";
}

const char* plane_gather_launch(PlaneGatherParams p, HostExec exec) {
    if (p.planes < 1 || p.planes > kMaxPlanes) return "unsupported number of planes";
    const int64_t blocks = (p.n * p.m + 31) / 32;  // PlaneGatherKernel::kPoints.
    if (p.dtype == kFloat32) {
        if (p.c == 32) return run_blocks<PlaneGatherKernel<float, 32>>(p, blocks, exec);
        return run_blocks<PlaneGatherKernel<float, 0>>(p, blocks, exec);
    }
    if (p.dtype == kFloat64) return run_blocks<PlaneGatherKernel<double, 0>>(p, blocks, exec);
    return "unsupported dtype";
}

const char* plane_scatter_launch(PlaneScatterParams p, HostExec exec) {
    if (p.k < 1 || p.k > 4 * kMaxPlanes) return "unsupported number of entries per point";
    if (p.rows_per_block < 1) return "rows_per_block must be positive";
    const int64_t blocks = (p.table_rows + p.rows_per_block - 1) / p.rows_per_block;
    if (p.dtype == kFloat32) {
        if (p.c == 32) {
            if (p.rows_int64) return run_blocks<PlaneScatterKernel<float, int64_t, 32>>(p, blocks, exec);
            return run_blocks<PlaneScatterKernel<float, int32_t, 32>>(p, blocks, exec);
        }
        if (p.rows_int64) return run_blocks<PlaneScatterKernel<float, int64_t, 0>>(p, blocks, exec);
        return run_blocks<PlaneScatterKernel<float, int32_t, 0>>(p, blocks, exec);
    }
    if (p.dtype == kFloat64) {
        if (p.rows_int64) return run_blocks<PlaneScatterKernel<double, int64_t, 0>>(p, blocks, exec);
        return run_blocks<PlaneScatterKernel<double, int32_t, 0>>(p, blocks, exec);
    }
    return "unsupported dtype";
}

const char* composite_launch(CompositeParams p, HostExec exec) {
    int64_t total = 0;
    for (int k = 0; k < p.sets; ++k) total += p.samples[k];
    if (p.sets < 1 || p.sets > kMaxSets || total < 2 || total > kMaxRaySamples) return "unsupported sample counts";
    const int64_t blocks = (p.rays + 63) / 64;
    if (p.dtype == kFloat32) return run_blocks<CompositeKernel<float>>(p, blocks, exec);
    if (p.dtype == kFloat64) return run_blocks<CompositeKernel<double>>(p, blocks, exec);
    return "unsupported dtype";
}

const char* importance_launch(ImportanceParams p, HostExec exec) {
    if (p.s < 4 || p.s > kMaxRaySamples) return "unsupported sample count";
    const int64_t blocks = (p.rays + 63) / 64;
    if (p.dtype == kFloat32) return run_blocks<ImportanceKernel<float>>(p, blocks, exec);
    if (p.dtype == kFloat64) return run_blocks<ImportanceKernel<double>>(p, blocks, exec);
    return "unsupported dtype";
}

#endif  // EG_CUDA

}  // namespace eg
