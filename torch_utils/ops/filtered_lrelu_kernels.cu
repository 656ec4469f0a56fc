// filtered_lrelu kernels: bias, up-FIR, leaky ReLU with gain and clamp, down-FIR in one pass
// (filtered_lrelu.h), and the same pass with the derivative read from a mask in place of the leaky ReLU
// (the gradient). Compiled by nvcc for CUDA and by the host compiler for the CPU (portable.h). No ATen.
//
// A block computes a tile of outputs of one or more planes. It stages the input samples the tile needs
// (bias added, zeros outside the image), computes the intermediate samples the tile's outputs read
// (stage 1 in polyphase form, separably or with a 2-D filter), applies the point-wise step there, and
// filters and decimates into the output (stage 3, separably or 2-D). The intermediate exists only in
// the block's buffers. Buffers keep each axis's phases apart ("phase-major": element l of a row at
// [l % phases][l / phases]), so that every inner loop reads unit-stride: stage 1 per phase of `up`,
// stage 3 per phase of `down`.
//
// Mask codes are written by the tile that owns the intermediate samples (each tile owns the samples
// from its first output times `down` up to the next tile's), whole bytes at a time: the tile width is a
// multiple of 8 outputs whenever there are several tiles across, so no byte has two writers.
//
// Threads: on CUDA each thread computes whole outputs of a pass (dot products over the taps). The host's
// one-thread blocks run the same passes as row operations (for each tap, a unit-stride multiply-add over
// a row) that the compiler vectorises whatever the filter size.

#include <type_traits>

#include "filtered_lrelu.h"

namespace eg {
namespace {

#if EG_CUDA
constexpr int kSmemBytes = 44 * 1024;   // Static shared memory per block.
constexpr int kTileX = 16, kTileY = 16;  // Output tile a block aims for.
#else
constexpr int kSmemBytes = 192 * 1024;  // A block's scratch on the host's stack.
constexpr int kTileX = 64, kTileY = 32;
#endif
constexpr int kCudaSmemBytes = 44 * 1024, kCudaTileX = 16, kCudaTileY = 16;  // For emulation on the host.
const Dim3 kCudaBlock{32, 8, 1};

EG_HD int align4(int n) { return (n + 3) & ~3; }

// The part of one axis that a tile covers.
struct TileAxis {
    int o0, nout;    // Outputs [o0, o0 + nout).
    int j0, len;     // Intermediate samples [j0, j0 + len) computed; j0 is a multiple of up.
    int delta;       // The first sample stage 3 reads, minus j0 (< up).
    int nq;          // ceil(len / up): samples per phase.
    int i0, nin;     // Input samples [i0, i0 + nin) staged.
    int own0, own1;  // Intermediate samples whose mask codes this tile writes.
};

EG_HD TileAxis tile_axis(const FlreluAxis& a, int t, int tiles) {
    TileAxis s;
    s.o0 = t * a.tile_out;
    s.nout = imin(a.tile_out, a.out - s.o0);
    const int first = s.o0 * a.down + a.offset;
    s.j0 = floor_div(first, a.up) * a.up;
    s.delta = first - s.j0;
    s.len = first + (s.nout - 1) * a.down + a.taps3 - s.j0;
    s.nq = ceil_div(s.len, a.up);
    s.i0 = s.j0 / a.up + a.imin;  // Exact: j0 is a multiple of up.
    s.nin = s.nq + a.span + a.phase_taps - 1;
    s.own0 = t == 0 ? 0 : first;
    s.own1 = t == tiles - 1 ? a.mid : first + a.tile_out * a.down;
    return s;
}

// The buffers of a block, carved from its shared memory (sizes in flrelu_layout()).
template <class A>
struct Buffers {
    A *w1, *w3;       // Stage 1 phase taps; stage 3 taps.
    A *tile, *xp;     // Input tile [tile_in_y][tile_in_x]; stage 1 along x [tile_in_y][up_x * tile_q_x].
    A *ym, *zm;       // Intermediate before / after the point-wise step (phase-major by up_x / down_x).
    A *v, *row;       // Stage 3 along x [tile_mid_y][tile_out_x]; one output row [tile_out_x].
    int *yidx, *zidx; // Where intermediate sample l of a row sits in ym / zm.
    A* cpm;           // Host: the mask codes of a row, phase-major by up_x (as numbers: vector selects).
    uint8_t* codes;   // Host: the mask codes of a row in natural order (valid from codes[-8]).
};

// Carves the buffers from `base` into *b (when b is not null); returns their size in units of A.
template <class A>
EG_HD int flrelu_layout(const FlreluParams& p, Buffers<A>* b, A* base) {
    const FlreluAxis &ax = p.ax, &ay = p.ay;
    const int px = ax.up * ax.tile_q, pz = ax.down * ax.tile_z;
    const bool in_place = ax.up == ax.down;  // The same layout before and after the point-wise step.
    const int ints = ceil_div(ax.tile_mid * int(sizeof(int)), int(sizeof(A)));
    const int code_bytes = ceil_div(ax.tile_mid + 32, int(sizeof(A)));
    const int sizes[12] = {
        p.sep1 ? ax.up * ax.phase_taps + ay.up * ay.phase_taps : ax.up * ay.up * ax.phase_taps * ay.phase_taps,
        p.sep3 ? ax.taps3 : ax.taps3 * ay.taps3,
        ay.tile_in * ax.tile_in,
        p.sep1 ? ay.tile_in * px : 0,
        ay.tile_mid * px,
        in_place ? 0 : ay.tile_mid * pz,
        p.sep3 ? ay.tile_mid * ax.tile_out : 0,
        ax.tile_out,
        ints,
        ints,
        px,
        code_bytes};
    int total = 0, start[12];
    for (int i = 0; i < 12; ++i) {
        start[i] = total;
        total += align4(sizes[i]);
    }
    if (b != nullptr) {
        A* ptrs[12];
        for (int i = 0; i < 12; ++i) ptrs[i] = base + start[i];
        b->w1 = ptrs[0];
        b->w3 = ptrs[1];
        b->tile = ptrs[2];
        b->xp = ptrs[3];
        b->ym = ptrs[4];
        b->zm = in_place ? ptrs[4] : ptrs[5];
        b->v = ptrs[6];
        b->row = ptrs[7];
        b->yidx = reinterpret_cast<int*>(ptrs[8]);
        b->zidx = reinterpret_cast<int*>(ptrs[9]);
        b->cpm = ptrs[10];
        b->codes = reinterpret_cast<uint8_t*>(ptrs[11]) + 8;
    }
    return total;
}

template <class T, int MODE>
struct FilteredLreluKernel {
    using A = acc_t<T>;

    template <class Block>
    static EG_DEVICE void run(const FlreluParams& p, const Block& blk) {
        constexpr bool kHost = std::is_same<Block, HostBlock>::value;
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        EG_SHARED alignas(16) unsigned char smem[kSmemBytes];
        Buffers<A> buf;
        flrelu_layout<A>(p, &buf, reinterpret_cast<A*>(smem));

        const int tiles_x = ceil_div(ax.out, ax.tile_out), tiles_y = ceil_div(ay.out, ay.tile_out);
        const TileAxis sx = tile_axis(ax, blk.idx_y(), tiles_x), sy = tile_axis(ay, blk.idx_z(), tiles_y);

        // Tables: the phase taps of stage 1, the taps of stage 3, the positions in the phase-major rows.
        const A* f1 = static_cast<const A*>(p.f1);
        const A* f3 = static_cast<const A*>(p.f3);
        const int nw1x = ax.up * ax.phase_taps, nw1 = p.sep1 ? nw1x + ay.up * ay.phase_taps
                                                            : ax.up * ay.up * ax.phase_taps * ay.phase_taps;
        const int nw3 = p.sep3 ? ax.taps3 : ax.taps3 * ay.taps3;
        EG_THREADS(blk, tx, ty) {
            const int tid = ty * blk.dim_x() + tx, nt = blk.num_threads();
            for (int i = tid; i < nw1; i += nt) {
                int k;
                if (p.sep1) {  // [up_x][phase_taps_x], then [up_y][phase_taps_y].
                    const FlreluAxis& a = i < nw1x ? ax : ay;
                    const int j = i < nw1x ? i : i - nw1x;
                    k = a.k0[j / a.phase_taps] + j % a.phase_taps * a.up;
                    buf.w1[i] = k < a.taps1 ? f1[k] : A(0);
                } else {       // [up_y][up_x][phase_taps_y][phase_taps_x].
                    const int sxx = i % ax.phase_taps, syy = i / ax.phase_taps % ay.phase_taps;
                    const int rx = i / (ax.phase_taps * ay.phase_taps) % ax.up;
                    const int ry = i / (ax.phase_taps * ay.phase_taps * ax.up);
                    const int kx = ax.k0[rx] + sxx * ax.up, ky = ay.k0[ry] + syy * ay.up;
                    buf.w1[i] = kx < ax.taps1 && ky < ay.taps1 ? f1[ky * ax.taps1 + kx] : A(0);
                }
            }
            for (int i = tid; i < nw3; i += nt) buf.w3[i] = f3[i];
            for (int l = tid; l < ax.tile_mid; l += nt) {
                buf.yidx[l] = l % ax.up * ax.tile_q + l / ax.up;
                buf.zidx[l] = l % ax.down * ax.tile_z + l / ax.down;
            }
        }

        const int64_t plane_end = imin64(p.planes, (int64_t(blk.idx_x()) + 1) * p.planes_per_block);
        for (int64_t plane = int64_t(blk.idx_x()) * p.planes_per_block; plane < plane_end; ++plane) {
            EG_SYNC();  // The tables are ready; the previous plane's buffers are no longer read.
            const A bias = p.b != nullptr ? static_cast<const A*>(p.b)[plane % p.channels] : A(0);
            load_tile(buf.tile, static_cast<const T*>(p.x) + plane * ay.in * ax.in, ax.in, ay.in, sx.i0, sy.i0,
                      ax.tile_in, sx.nin, sy.nin, bias, blk);
            EG_SYNC();
            if (p.sep1) {
                stage1_x<kHost>(p, buf, sx, sy, blk);
                EG_SYNC();
                stage1_y<kHost>(p, buf, sx, sy, blk);
            } else {
                stage1_2d<kHost>(p, buf, sx, sy, blk);
            }
            EG_SYNC();
            if constexpr (kHost) pointwise_host(p, buf, sx, sy, plane);
            else pointwise(p, buf, sx, sy, plane, blk);
            EG_SYNC();
            T* out = static_cast<T*>(p.y) + plane * ay.out * ax.out + int64_t(sy.o0) * ax.out + sx.o0;
            if (p.sep3) {
                stage3_x<kHost>(p, buf, sx, sy, blk);
                EG_SYNC();
                stage3_y<kHost>(p, buf, sx, sy, out, blk);
            } else {
                stage3_2d<kHost>(p, buf, sx, sy, out, blk);
            }
        }
    }

    // Stages rows [iy0, iy0 + th) x columns [ix0, ix0 + tw) of plane `src`, plus the bias, into `tile`
    // (pitch `pitch`), zeros outside the image.
    template <class Block>
    static EG_DEVICE void load_tile(A* tile, const T* src, int in_w, int in_h, int ix0, int iy0, int pitch,
                                    int tw, int th, A bias, const Block& blk) {
        const int lo = imin(imax(-ix0, 0), tw), hi = imax(imin(in_w - ix0, tw), lo);
        EG_THREADS(blk, tx, ty) {
            for (int r = ty; r < th; r += blk.dim_y()) {
                A* dst = tile + r * pitch;
                const int iy = iy0 + r;
                if (iy < 0 || iy >= in_h) {
                    for (int c = tx; c < tw; c += blk.dim_x()) dst[c] = A(0);
                    continue;
                }
                const T* row = src + int64_t(iy) * in_w + ix0;
                for (int c = tx; c < lo; c += blk.dim_x()) dst[c] = A(0);
                for (int c = lo + pos_mod(tx - lo, blk.dim_x()); c < hi; c += blk.dim_x())
                    dst[c] = to_acc(row[c]) + bias;
                for (int c = hi + pos_mod(tx - hi, blk.dim_x()); c < tw; c += blk.dim_x()) dst[c] = A(0);
            }
        }
    }

    // Stage 1 along x (separable): xp[r][phase][q] for every staged row r.
    template <bool kHost, class Block>
    static EG_DEVICE void stage1_x(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                   const TileAxis& sy, const Block& blk) {
        const FlreluAxis& ax = p.ax;
        const int U = ax.up, NP = ax.phase_taps, TQ = ax.tile_q, PX = U * TQ, TW = ax.tile_in, nq = sx.nq;
        if constexpr (kHost) {
            int offs[kFlreluMaxTaps];
            for (int s = 0; s < NP; ++s) offs[s] = s;
            for (int r = 0; r < sy.nin; ++r)
                for (int ph = 0; ph < U; ++ph)
                    taps_row(b.xp + r * PX + ph * TQ, b.w1 + ph * NP, b.tile + r * TW + ax.off[ph], offs, NP, nq,
                             false);
        } else {
            EG_THREADS(blk, tx, ty) {
                const int n = sy.nin * U * nq;
                for (int i = ty * blk.dim_x() + tx; i < n; i += blk.num_threads()) {
                    const int q = i % nq, ph = i / nq % U, r = i / (nq * U);
                    b.xp[r * PX + ph * TQ + q] = dot(b.w1 + ph * NP, b.tile + r * TW + ax.off[ph] + q, 1, NP);
                }
            }
        }
    }

    // Stage 1 along y (separable): ym[l][.] for the tile's intermediate rows l.
    template <bool kHost, class Block>
    static EG_DEVICE void stage1_y(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                   const TileAxis& sy, const Block& blk) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int U = ay.up, NP = ay.phase_taps, TQ = ax.tile_q, PX = ax.up * TQ, nq = sx.nq;
        const A* wy = b.w1 + ax.up * ax.phase_taps;
        if constexpr (kHost) {
            int offs[kFlreluMaxTaps];
            for (int s = 0; s < NP; ++s) offs[s] = s * PX;
            for (int l = 0; l < sy.len; ++l) {
                const int ph = l % U;
                const A* src = b.xp + (l / U + ay.off[ph]) * PX;
                if (nq == TQ) {  // The phases' rows are contiguous.
                    taps_row(b.ym + l * PX, wy + ph * NP, src, offs, NP, PX, false);
                } else {
                    for (int phx = 0; phx < ax.up; ++phx)
                        taps_row(b.ym + l * PX + phx * TQ, wy + ph * NP, src + phx * TQ, offs, NP, nq, false);
                }
            }
        } else {
            EG_THREADS(blk, tx, ty) {
                const int n = sy.len * ax.up * nq;
                for (int i = ty * blk.dim_x() + tx; i < n; i += blk.num_threads()) {
                    const int q = i % nq, phx = i / nq % ax.up, l = i / (nq * ax.up), ph = l % U;
                    const int c = phx * TQ + q;
                    b.ym[l * PX + c] = dot(wy + ph * NP, b.xp + (l / U + ay.off[ph]) * PX + c, PX, NP);
                }
            }
        }
    }

    // Stage 1 with a 2-D filter: ym[l][.] directly from the input tile.
    template <bool kHost, class Block>
    static EG_DEVICE void stage1_2d(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                    const TileAxis& sy, const Block& blk) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int NX = ax.phase_taps, NY = ay.phase_taps, TQ = ax.tile_q, PX = ax.up * TQ, TW = ax.tile_in;
        const int nq = sx.nq;
        if constexpr (kHost) {
            int offs[kFlreluMaxTaps];
            for (int s = 0; s < NX; ++s) offs[s] = s;
            for (int l = 0; l < sy.len; ++l) {
                const int ph = l % ay.up;
                for (int phx = 0; phx < ax.up; ++phx) {
                    const A* w = b.w1 + (ph * ax.up + phx) * NY * NX;
                    const A* src = b.tile + (l / ay.up + ay.off[ph]) * TW + ax.off[phx];
                    for (int r = 0; r < NY; ++r)  // A row of taps per sweep, accumulated over the rows.
                        taps_row(b.ym + l * PX + phx * TQ, w + r * NX, src + r * TW, offs, NX, nq, r > 0);
                }
            }
        } else {
            EG_THREADS(blk, tx, ty) {
                const int n = sy.len * ax.up * nq;
                for (int i = ty * blk.dim_x() + tx; i < n; i += blk.num_threads()) {
                    const int q = i % nq, phx = i / nq % ax.up, l = i / (nq * ax.up), ph = l % ay.up;
                    const A* w = b.w1 + (ph * ax.up + phx) * NY * NX;
                    const A* src = b.tile + (l / ay.up + ay.off[ph]) * TW + ax.off[phx] + q;
                    b.ym[l * PX + phx * TQ + q] = dot(w, src, TW, NY, NX);
                }
            }
        }
    }

    // The point-wise step, ym -> zm, in groups of the samples that share a mask byte.
    template <class Block>
    static EG_DEVICE void pointwise(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                    const TileAxis& sy, int64_t plane, const Block& blk) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int PX = ax.up * ax.tile_q, PZ = ax.down * ax.tile_z;
        const int bits = p.mask_bits, per_byte = 8 / bits, code_mask = (1 << bits) - 1;
        const A gain = A(p.gain), slope = A(p.slope), clamp = A(p.clamp);
        const bool clamping = p.clamp >= 0;
        const A factor[4] = {gain, gain * slope, A(0), A(0)};  // The derivative of each code.
        const int g0 = floor_div(sx.j0, per_byte), ng = floor_div(sx.j0 + sx.len - 1, per_byte) + 1 - g0;
        uint8_t* mask = static_cast<uint8_t*>(p.mask);
        EG_THREADS(blk, tx, ty) {
            for (int i = ty * blk.dim_x() + tx; i < sy.len * ng; i += blk.num_threads()) {
                const int l = i / ng, g = g0 + i % ng, jy = sy.j0 + l;
                const bool row_in = jy >= 0 && jy < ay.mid;
                uint8_t* mrow = row_in && MODE != kFlreluForward ? mask + (plane * ay.mid + jy) * p.mask_pitch
                                                                 : nullptr;
                const bool read = MODE == kFlreluLinear && mrow != nullptr && g >= 0 && g < p.mask_pitch;
                const unsigned in_byte = read ? mrow[g] : 0u;
                unsigned out_byte = 0;
                const A* yrow = b.ym + l * PX;
                A* zrow = b.zm + l * PZ;
                const int lx0 = imax(g * per_byte - sx.j0, 0), lx1 = imin((g + 1) * per_byte - sx.j0, sx.len);
                for (int lx = lx0; lx < lx1; ++lx) {
                    const int jx = sx.j0 + lx, e = jx - g * per_byte;
                    const A m = yrow[b.yidx[lx]];
                    A v;
                    if (!row_in || jx < 0 || jx >= ax.mid) {
                        v = A(0);  // Outside the intermediate: zero (the adjoint reads there).
                    } else if (MODE == kFlreluLinear) {
                        v = m * factor[(in_byte >> (e * bits)) & code_mask];
                    } else {
                        v = (m > A(0) ? m : m * slope) * gain;
                        unsigned code = m > A(0) ? 0u : 1u;
                        if (clamping && abs_(v) > clamp) {
                            v = v > A(0) ? clamp : -clamp;
                            code = 2u;
                        }
                        out_byte |= code << (e * bits);
                    }
                    zrow[b.zidx[lx]] = v;
                }
                if (MODE == kFlreluForwardMask && mrow != nullptr && jy >= sy.own0 && jy < sy.own1 &&
                    g * per_byte >= sx.own0 && g * per_byte < sx.own1)
                    mrow[g] = uint8_t(out_byte);
            }
        }
    }

    // The point-wise step on the host, row by row: vector loops over each phase of ym (in place), the mask
    // codes through a row of bytes in natural order; samples outside the intermediate zeroed; zm filled
    // when its layout differs. The same values and codes as pointwise().
    static void pointwise_host(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx, const TileAxis& sy,
                               int64_t plane) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int U = ax.up, D = ax.down, TQ = ax.tile_q, TZ = ax.tile_z, PX = U * TQ, nq = sx.nq, len = sx.len;
        const int lo = imin(imax(-sx.j0, 0), len), hi = imax(imin(ax.mid - sx.j0, len), lo);  // Inside [0, mid).
        const int bits = p.mask_bits, per_byte = 8 / bits, code_mask = (1 << bits) - 1;
        const A gain = A(p.gain), gain_neg = A(p.gain) * A(p.slope), slope = A(p.slope);
        const A clamp = p.clamp >= 0 ? A(p.clamp) : A(INFINITY);
        uint8_t* EG_RESTRICT codes = b.codes;  // codes[lx] for row sample lx (valid from -8).
        for (int l = 0; l < sy.len; ++l) {
            const int jy = sy.j0 + l;
            A* EG_RESTRICT yrow = b.ym + l * PX;
            if (jy < 0 || jy >= ay.mid || lo == hi) {
                for (int i = 0; i < PX; ++i) yrow[i] = A(0);
            } else if (MODE == kFlreluLinear) {
                const uint8_t* mrow = static_cast<const uint8_t*>(p.mask) + (plane * ay.mid + jy) * p.mask_pitch;
                for (int g = (sx.j0 + lo) / per_byte; g <= (sx.j0 + hi - 1) / per_byte; ++g) {
                    const unsigned byte = mrow[g];
                    uint8_t* c = codes + g * per_byte - sx.j0;
                    for (int e = 0; e < per_byte; ++e) c[e] = uint8_t((byte >> (e * bits)) & code_mask);
                }
                for (int lx = 0; lx < lo; ++lx) codes[lx] = 3;  // Code 3: derivative 0.
                for (int lx = hi; lx < nq * U; ++lx) codes[lx] = 3;
                for (int ph = 0; ph < U; ++ph) {
                    A* EG_RESTRICT y = yrow + ph * TQ;
                    const uint8_t* c = codes + ph;
                    switch (U) {
                        case 1: for (int q = 0; q < nq; ++q) y[q] *= derivative(c[q], gain, gain_neg); break;
                        case 2: for (int q = 0; q < nq; ++q) y[q] *= derivative(c[2 * q], gain, gain_neg); break;
                        case 4: for (int q = 0; q < nq; ++q) y[q] *= derivative(c[4 * q], gain, gain_neg); break;
                        default: for (int q = 0; q < nq; ++q) y[q] *= derivative(c[U * q], gain, gain_neg);
                    }
                }
            } else {
                const bool owned = MODE == kFlreluForwardMask && jy >= sy.own0 && jy < sy.own1;
                for (int ph = 0; ph < U; ++ph) {
                    A* EG_RESTRICT y = yrow + ph * TQ;
                    A* EG_RESTRICT c = b.cpm + ph * TQ;
                    for (int q = 0; q < nq; ++q) {  // Selects between values computed unconditionally: vectorised.
                        const A m = y[q], ms = m * slope;
                        const A v = (m > A(0) ? m : ms) * gain, v_lo = v < -clamp ? -clamp : v;
                        if (MODE == kFlreluForwardMask) {
                            const A neg = m > A(0) ? A(0) : A(1), hi_code = v > clamp ? A(2) : neg;
                            c[q] = v < -clamp ? A(2) : hi_code;
                        }
                        y[q] = v > clamp ? clamp : v_lo;
                    }
                }
                for (int lx = 0; lx < lo; ++lx) yrow[b.yidx[lx]] = A(0);
                for (int lx = hi; lx < len; ++lx) yrow[b.yidx[lx]] = A(0);
                if (owned) {
                    for (int ph = 0; ph < U; ++ph) strided_copy(codes + ph, U, b.cpm + ph * TQ, 1, nq);
                    // The owned bytes; samples past the computed ones (no output reads them) get code 0.
                    const int g0 = sx.own0 / per_byte, g1 = ceil_div(sx.own1, per_byte);
                    for (int lx = hi; lx < g1 * per_byte - sx.j0; ++lx) codes[lx] = 0;
                    uint8_t* mrow = static_cast<uint8_t*>(p.mask) + (plane * ay.mid + jy) * p.mask_pitch;
                    if (bits == 1) pack<1>(mrow, codes - sx.j0, g0, g1);
                    else pack<2>(mrow, codes - sx.j0, g0, g1);
                }
            }
            if (U == D) continue;  // zm is ym.
            // Sample lx moves from [lx % U][lx / U] to [lx % D][lx / D].
            A* EG_RESTRICT zrow = b.zm + l * D * TZ;
            if (U % D == 0) {
                for (int ph = 0; ph < U; ++ph)
                    strided_copy(zrow + ph % D * TZ + ph / D, U / D, yrow + ph * TQ, 1, ceil_div(len - ph, U));
            } else if (D % U == 0) {
                for (int ph = 0; ph < U; ++ph)
                    for (int r = 0; r < D / U; ++r)
                        strided_copy(zrow + (r * U + ph) * TZ, 1, yrow + ph * TQ + r, D / U,
                                     ceil_div(len - ph - r * U, D));
            } else {
                for (int lx = 0; lx < len; ++lx) zrow[b.zidx[lx]] = yrow[b.yidx[lx]];
            }
        }
    }

    // dst[i * ds] = src[i * ss], i < n, the strides compile-time constants where they are 1, 2 or 4.
    template <class DT, class ST>
    static void strided_copy(DT* EG_RESTRICT dst, int ds, const ST* EG_RESTRICT src, int ss, int n) {
        if (ds == 1 && ss == 1) for (int i = 0; i < n; ++i) dst[i] = DT(src[i]);
        else if (ds == 2 && ss == 1) for (int i = 0; i < n; ++i) dst[2 * i] = DT(src[i]);
        else if (ds == 4 && ss == 1) for (int i = 0; i < n; ++i) dst[4 * i] = DT(src[i]);
        else if (ds == 1 && ss == 2) for (int i = 0; i < n; ++i) dst[i] = DT(src[2 * i]);
        else if (ds == 1 && ss == 4) for (int i = 0; i < n; ++i) dst[i] = DT(src[4 * i]);
        else for (int i = 0; i < n; ++i) dst[i * ds] = DT(src[i * ss]);
    }

    static EG_HD A derivative(unsigned code, A gain, A gain_neg) {
        return code == 0 ? gain : (code == 1 ? gain_neg : A(0));
    }

    // Mask bytes [g0, g1) from one code per byte, codes[jx] for sample jx.
    template <int BITS>
    static void pack(uint8_t* EG_RESTRICT mrow, const uint8_t* EG_RESTRICT codes, int g0, int g1) {
        constexpr int kPerByte = 8 / BITS;
        for (int g = g0; g < g1; ++g) {
            unsigned byte = 0;
            for (int e = 0; e < kPerByte; ++e) byte |= unsigned(codes[g * kPerByte + e]) << (e * BITS);
            mrow[g] = uint8_t(byte);
        }
    }

    // Stage 3 along x (separable): v[l][o] for the intermediate rows stage 3 reads.
    template <bool kHost, class Block>
    static EG_DEVICE void stage3_x(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                   const TileAxis& sy, const Block& blk) {
        const FlreluAxis& ax = p.ax;
        const int D = ax.down, K = ax.taps3, TZ = ax.tile_z, PZ = D * TZ, TO = ax.tile_out, n = sx.nout;
        if constexpr (kHost) {
            int zoff[kFlreluMaxTaps];
            for (int k = 0; k < K; ++k) zoff[k] = (sx.delta + k) % D * TZ + (sx.delta + k) / D;
            for (int l = sy.delta; l < sy.len; ++l) taps_row(b.v + l * TO, b.w3, b.zm + l * PZ, zoff, K, n, false);
        } else {
            EG_THREADS(blk, tx, ty) {
                const int rows = sy.len - sy.delta;
                for (int i = ty * blk.dim_x() + tx; i < rows * n; i += blk.num_threads()) {
                    const int o = i % n, l = sy.delta + i / n;
                    const A* zrow = b.zm + l * PZ + o;
                    A acc = A(0);
                    for (int k = 0; k < K; ++k) {
                        const int t = sx.delta + k;
                        acc = k == 0 ? b.w3[0] * zrow[t % D * TZ + t / D] : acc + b.w3[k] * zrow[t % D * TZ + t / D];
                    }
                    b.v[l * TO + o] = acc;
                }
            }
        }
    }

    // Stage 3 along y (separable), into the output.
    template <bool kHost, class Block>
    static EG_DEVICE void stage3_y(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                   const TileAxis& sy, T* out, const Block& blk) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int D = ay.down, K = ay.taps3, TO = ax.tile_out, n = sx.nout;
        if constexpr (kHost) {
            int offs[kFlreluMaxTaps];
            for (int k = 0; k < K; ++k) offs[k] = k * TO;
            for (int oy = 0; oy < sy.nout; ++oy) {
                A* EG_RESTRICT acc = b.row;
                taps_row(acc, b.w3, b.v + (oy * D + sy.delta) * TO, offs, K, n, false);
                T* EG_RESTRICT orow = out + int64_t(oy) * ax.out;
                for (int o = 0; o < n; ++o) store(orow + o, acc[o]);
            }
        } else {
            EG_THREADS(blk, tx, ty) {
                for (int i = ty * blk.dim_x() + tx; i < sy.nout * n; i += blk.num_threads()) {
                    const int o = i % n, oy = i / n;
                    store(out + int64_t(oy) * ax.out + o, dot(b.w3, b.v + (oy * D + sy.delta) * TO + o, TO, K));
                }
            }
        }
    }

    // Stage 3 with a 2-D filter, into the output.
    template <bool kHost, class Block>
    static EG_DEVICE void stage3_2d(const FlreluParams& p, const Buffers<A>& b, const TileAxis& sx,
                                    const TileAxis& sy, T* out, const Block& blk) {
        const FlreluAxis &ax = p.ax, &ay = p.ay;
        const int D = ax.down, KX = ax.taps3, KY = ay.taps3, TZ = ax.tile_z, PZ = D * TZ, n = sx.nout;
        if constexpr (kHost) {
            int zoff[kFlreluMaxTaps];
            for (int k = 0; k < KX; ++k) zoff[k] = (sx.delta + k) % D * TZ + (sx.delta + k) / D;
            for (int oy = 0; oy < sy.nout; ++oy) {
                A* EG_RESTRICT acc = b.row;
                const A* src = b.zm + (oy * ay.down + sy.delta) * PZ;
                for (int ky = 0; ky < KY; ++ky) taps_row(acc, b.w3 + ky * KX, src + ky * PZ, zoff, KX, n, ky > 0);
                T* EG_RESTRICT orow = out + int64_t(oy) * ax.out;
                for (int o = 0; o < n; ++o) store(orow + o, acc[o]);
            }
        } else {
            EG_THREADS(blk, tx, ty) {
                for (int i = ty * blk.dim_x() + tx; i < sy.nout * n; i += blk.num_threads()) {
                    const int o = i % n, oy = i / n;
                    const A* src = b.zm + (oy * ay.down + sy.delta) * PZ + o;
                    A acc = A(0);
                    for (int ky = 0; ky < KY; ++ky) {
                        for (int kx = 0; kx < KX; ++kx) {
                            const int t = sx.delta + kx;
                            const A term = b.w3[ky * KX + kx] * src[ky * PZ + t % D * TZ + t / D];
                            acc = ky == 0 && kx == 0 ? term : acc + term;
                        }
                    }
                    store(out + int64_t(oy) * ax.out + o, acc);
                }
            }
        }
    }

    // The host's row operations: dst[i] (= or +=) sum_k w[k] * src[off[k] + i], i < n, the taps summed in
    // order, up to four per sweep over the row (the partial sums stay in registers).
    static EG_HD void taps_row(A* EG_RESTRICT dst, const A* w, const A* src, const int* off, int taps, int n,
                               bool accumulate) {
        for (int k = 0; k < taps; k += 4) {
            const bool init = k == 0 && !accumulate;
            switch (imin(taps - k, 4)) {
                case 1: sweep<1>(dst, w + k, src, off + k, n, init); break;
                case 2: sweep<2>(dst, w + k, src, off + k, n, init); break;
                case 3: sweep<3>(dst, w + k, src, off + k, n, init); break;
                default: sweep<4>(dst, w + k, src, off + k, n, init); break;
            }
        }
    }
    template <int M>
    static EG_HD void sweep(A* EG_RESTRICT dst, const A* w, const A* src, const int* off, int n, bool init) {
        const A* EG_RESTRICT s0 = src + off[0];
        const A* EG_RESTRICT s1 = src + off[M > 1 ? 1 : 0];
        const A* EG_RESTRICT s2 = src + off[M > 2 ? 2 : 0];
        const A* EG_RESTRICT s3 = src + off[M > 3 ? 3 : 0];
        const A w0 = w[0], w1 = M > 1 ? w[1] : A(0), w2 = M > 2 ? w[2] : A(0), w3 = M > 3 ? w[3] : A(0);
        if (init) {
            for (int i = 0; i < n; ++i) {
                A a = w0 * s0[i];
                if (M > 1) a += w1 * s1[i];
                if (M > 2) a += w2 * s2[i];
                if (M > 3) a += w3 * s3[i];
                dst[i] = a;
            }
        } else {
            for (int i = 0; i < n; ++i) {
                A a = dst[i];
                a += w0 * s0[i];
                if (M > 1) a += w1 * s1[i];
                if (M > 2) a += w2 * s2[i];
                if (M > 3) a += w3 * s3[i];
                dst[i] = a;
            }
        }
    }

    // sum_s w[s] * src[s * stride], s < n, in the order of the host's row operations.
    static EG_HD A dot(const A* w, const A* src, int stride, int n) {
        A acc = w[0] * src[0];
        for (int s = 1; s < n; ++s) acc += w[s] * src[s * stride];
        return acc;
    }
    // sum_{sy, sx} w[sy][sx] * src[sy * stride + sx].
    static EG_HD A dot(const A* w, const A* src, int stride, int ny, int nx) {
        A acc = w[0] * src[0];
        for (int s = 1; s < ny * nx; ++s) acc += w[s] * src[s / nx * stride + s % nx];
        return acc;
    }

    static EG_HD int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
};

void set_tile(FlreluAxis& a, int tile_out) {
    a.tile_out = tile_out;
    a.tile_mid = (tile_out - 1) * a.down + a.taps3 + a.up - 1;
    a.tile_q = ceil_div(a.tile_mid, a.up);
    a.tile_in = a.tile_q + a.span + a.phase_taps - 1;
    a.tile_z = ceil_div(a.tile_mid, a.down);
}

template <class T, int MODE>
const char* launch_mode(const FlreluParams& p, Dim3 grid, void* stream, const HostExec& exec) {
    constexpr bool emu = std::is_same<T, float>::value;  // Emulating CUDA blocks: float32 only.
    return launch<FilteredLreluKernel<T, MODE>, emu>(p, grid, kCudaBlock, stream, exec);
}

template <class T>
const char* launch_dtype(FlreluParams& p, void* stream, HostExec exec) {
    using A = acc_t<T>;
    const bool cuda_shape = EG_CUDA || exec.emulate_cuda_blocks;
    const int smem = cuda_shape ? kCudaSmemBytes : kSmemBytes;
    const int target_x = cuda_shape ? kCudaTileX : kTileX, target_y = cuda_shape ? kCudaTileY : kTileY;

    // The largest tile (up to the target) whose buffers fit; halve its height first, then its width. Across
    // several tiles the width stays a multiple of 8 (whole mask bytes per tile).
    int tox = p.ax.out <= target_x ? p.ax.out : target_x;
    int toy = imin(p.ay.out, target_y);
    for (;;) {
        set_tile(p.ax, tox);
        set_tile(p.ay, toy);
        if (flrelu_layout<A>(p, nullptr, nullptr) * int(sizeof(A)) <= smem) break;
        if (toy > 1) toy = (toy + 1) / 2;
        else if (tox > 8) tox = (tox / 2 + 7) / 8 * 8;
        else return "the filters are too large for the kernel's tile buffer";
    }
    const int tiles_x = ceil_div(p.ax.out, tox), tiles_y = ceil_div(p.ay.out, toy);
    if (tiles_x > 65535 || tiles_y > 65535) return "image too large";

    // Planes per block: on the host enough work per block to amortise its set-up while keeping every thread
    // busy; on CUDA one.
    int64_t ppb = 1;
    const int64_t mids = int64_t(p.ax.tile_mid) * p.ay.tile_mid;
    if (!cuda_shape && p.planes * p.ax.mid * p.ay.mid < 32768) exec.num_threads = 1;  // Not worth waking threads.
    if (!cuda_shape) {
        const int64_t blocks_wanted = 4 * int64_t(exec.num_threads > 0 ? exec.num_threads : 1);
        const int64_t by_work = (8192 + mids - 1) / mids;
        const int64_t tiles = int64_t(tiles_x) * tiles_y;
        const int64_t by_threads = (p.planes * tiles + blocks_wanted - 1) / blocks_wanted / tiles;
        ppb = by_work < by_threads ? by_work : by_threads;
        if (ppb < 1) ppb = 1;
    }
    const int64_t plane_blocks = (p.planes + ppb - 1) / ppb;
    if (plane_blocks > 0x7fffffff) return "too many planes";
    p.planes_per_block = int(ppb);
    const Dim3 grid{int(plane_blocks), tiles_x, tiles_y};
    switch (p.mode) {
        case kFlreluForward: return launch_mode<T, kFlreluForward>(p, grid, stream, exec);
        case kFlreluForwardMask: return launch_mode<T, kFlreluForwardMask>(p, grid, stream, exec);
        case kFlreluLinear: return launch_mode<T, kFlreluLinear>(p, grid, stream, exec);
    }
    return "unknown mode";
}

}  // namespace

const char* flrelu_axis(FlreluAxis& a) {
    if (a.up < 1 || a.up > kFlreluMaxUp) return "up factor out of range (1..8)";
    if (a.down < 1 || a.down > kFlreluMaxUp) return "down factor out of range (1..8)";
    if (a.taps1 < 1 || a.taps1 > kFlreluMaxTaps || a.taps3 < 1 || a.taps3 > kFlreluMaxTaps)
        return "filter size out of range (1..64)";
    if (a.in < 1 || a.mid < 1 || a.out < 1) return "empty input, intermediate or output";
    a.phase_taps = ceil_div(a.taps1, a.up);
    int first[kFlreluMaxUp] = {};
    for (int r = 0; r < a.up; ++r) {
        a.k0[r] = pos_mod(a.pad - r, a.up);
        first[r] = (r + a.k0[r] - a.pad) / a.up;  // Exact: r + k0 - pad is a multiple of up.
    }
    a.imin = first[0];
    for (int r = 1; r < a.up; ++r) a.imin = imin(a.imin, first[r]);
    a.span = 0;
    for (int r = 0; r < a.up; ++r) {
        a.off[r] = first[r] - a.imin;
        a.span = imax(a.span, a.off[r]);
    }
    return nullptr;
}

const char* flrelu_launch(FlreluParams p, void* stream, HostExec exec) {
    if (p.planes == 0) return nullptr;
    if (p.mask_bits != 1 && p.mask_bits != 2) return "mask_bits must be 1 or 2";
    if (p.mode != kFlreluForward && p.mask == nullptr) return "this mode needs the mask";
    if (p.sep1 && p.ax.taps1 != p.ay.taps1) return "a separable filter has the same taps along x and y";
    if (p.sep3 && p.ax.taps3 != p.ay.taps3) return "a separable filter has the same taps along x and y";
    switch (p.dtype) {
        case kFloat32: return launch_dtype<float>(p, stream, exec);
        case kFloat64: return launch_dtype<double>(p, stream, exec);
        case kFloat16: return launch_dtype<f16>(p, stream, exec);
        case kBFloat16: return launch_dtype<bf16>(p, stream, exec);
    }
    return "unsupported dtype";
}

}  // namespace eg
