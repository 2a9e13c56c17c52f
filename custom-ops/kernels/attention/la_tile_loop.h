// The LongAttention tile loop, shared by every pattern and instantiated once per ISA
// (long_attention_scalar.cc / _avx2.cc / _avx512.cc include this file with their vector traits VT).
//
// Per work item (batch b, kv head, query rows [i0, i1), keys [ks, ke)) the G query heads of the kv
// head are processed together (M = G * rows), so every K/V tile is loaded once for the whole group:
//   for each key span of the pattern, for each tile of kBlockK keys (skipped when the pattern says Empty):
//     Kt   = rotate?(K tile) transposed to [D][kBlockK]           (pack: fp16 -> fp32, 8x8 transposes)
//     S    = Q_variant Kt                                          (register-blocked MR x NV*W micro-kernel)
//            (M <= 8 rows, e.g. decode: S = Q K^T from the K rows directly, no pack; QkDirect)
//     mask on Partial tiles only; online softmax (Dao et al. 2022, Alg. 1):
//       m' = max(m, rowmax S); P = exp(S - m'); l = l e^(m-m') + sum P; O = O e^(m-m')
//     O   += P V                                                   (register-blocked micro-kernel)
// Q is pre-multiplied by the softmax scale, so m and lse are in natural-log units of scale * q.k.
#pragma once

#include <type_traits>

#include "la_internal.h"

namespace longctx::la {

static inline void RotateRow(float* x, int64_t R, const float* c, const float* s, bool interleaved) {
  const int64_t half = R / 2;
  if (interleaved) {
    for (int64_t i = 0; i < half; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = b * c[i] + a * s[i];
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * c[i] - b * s[i];
      x[i + half] = b * c[i] + a * s[i];
    }
  }
}

template <class VT>
struct TileLoop {
  using V = typename VT::V;
  static constexpr int W = VT::W, MR = VT::MR, NV = VT::NV, CB = NV * W;
  static constexpr int64_t BK = kBlockK;
  static_assert(BK % CB == 0, "kBlockK must be a multiple of NV*W");
  static constexpr int64_t kDirectRows = 8;  // at most this many rows (G * query rows): QkDirect, no K pack

  struct Bufs {
    float *q, *o, *m, *l, *s, *kt, *kr, *vs, *row, *cs, *sn;
  };

  // ------------------------------------------------------------ micro-kernels

  // S[r][c] = sum_d Q[r][d] Kt[d][c] for R rows and ncb column blocks of CB.
  template <int R>
  static void QkBlock(const float* q, int64_t D, const float* kt, float* s, int ncb) {
    for (int cb = 0; cb < ncb; ++cb) {
      V acc[R][NV];
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) acc[r][n] = VT::zero();
      const float* kp = kt + cb * CB;
      for (int64_t d = 0; d < D; ++d) {
        V kv[NV];
        #pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) kv[n] = VT::load(kp + d * BK + n * W);
        #pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const V qb = VT::set1(q[r * D + d]);
          #pragma GCC unroll 4
          for (int n = 0; n < NV; ++n) acc[r][n] = VT::fma(qb, kv[n], acc[r][n]);
        }
      }
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) VT::store(s + r * BK + cb * CB + n * W, acc[r][n]);
    }
  }

  template <int R>
  static void QkRows(int rows, const float* q, int64_t D, const float* kt, float* s, int ncb) {
    if (rows == R) {
      QkBlock<R>(q, D, kt, s, ncb);
    } else if constexpr (R > 1) {
      QkRows<R - 1>(rows, q, D, kt, s, ncb);
    }
  }

  // Few query rows (decode: M = G): S[r][j] = q_r . k_j straight from the row-major K tile, without
  // the transposed pack (whose shuffles cost as much as the dot products when only G rows reuse it).
  // 4 keys x 2 rows per step (8 accumulators over D), each 4-key block reduced with VT::hsum4.
  static void QkDirect(const float* q, int64_t M, int64_t D, const float* k, int64_t bk, float* s) {
    int64_t j = 0;
    for (; j + 4 <= bk; j += 4) {
      const float* kj = k + j * D;
      int64_t r = 0;
      for (; r + 2 <= M; r += 2) {
        const float* q0 = q + r * D;
        const float* q1 = q0 + D;
        V a0[4] = {VT::zero(), VT::zero(), VT::zero(), VT::zero()};
        V a1[4] = {VT::zero(), VT::zero(), VT::zero(), VT::zero()};
        for (int64_t d = 0; d < D; d += W) {
          const V x0 = VT::load(q0 + d), x1 = VT::load(q1 + d);
          #pragma GCC unroll 4
          for (int n = 0; n < 4; ++n) {
            const V kv = VT::load(kj + n * D + d);
            a0[n] = VT::fma(x0, kv, a0[n]);
            a1[n] = VT::fma(x1, kv, a1[n]);
          }
        }
        VT::hsum4(a0, s + r * BK + j);
        VT::hsum4(a1, s + (r + 1) * BK + j);
      }
      for (; r < M; ++r) {
        const float* q0 = q + r * D;
        V a0[4] = {VT::zero(), VT::zero(), VT::zero(), VT::zero()};
        for (int64_t d = 0; d < D; d += W) {
          const V x0 = VT::load(q0 + d);
          #pragma GCC unroll 4
          for (int n = 0; n < 4; ++n) a0[n] = VT::fma(x0, VT::load(kj + n * D + d), a0[n]);
        }
        VT::hsum4(a0, s + r * BK + j);
      }
    }
    for (; j < bk; ++j) {
      for (int64_t r = 0; r < M; ++r) {
        V a = VT::zero();
        for (int64_t d = 0; d < D; d += W) a = VT::fma(VT::load(q + r * D + d), VT::load(k + j * D + d), a);
        s[r * BK + j] = VT::hsum(a);
      }
    }
  }

  // Many rows (the sparse estimators): S = Q K^T through the packed, register-blocked path of the tile loop;
  // kt is D x kBlockK floats of scratch.
  static void QkPacked(const float* q, int64_t M, int64_t D, const float* k, int64_t bk, float* s, float* kt) {
    const int ncb = static_cast<int>((bk + CB - 1) / CB);
    VT::PackTransposed(k, D, bk, D, kt, BK);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = bk; j < ncb * CB; ++j) kt[d * BK + j] = 0.f;
    for (int64_t r0 = 0; r0 < M; r0 += MR) {
      const int rows = static_cast<int>(std::min<int64_t>(MR, M - r0));
      QkRows<MR>(rows, q + r0 * D, D, kt, s + r0 * BK, ncb);
    }
  }

  // O[r][d0 .. d0+N*W) += sum_j P[r][j] V[j][d0 ..]
  template <int R, int N>
  static void PvBlock(const float* p, const float* v, int64_t ldv, int64_t bk, float* o, int64_t D, int64_t d0) {
    V acc[R][N];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 4
      for (int n = 0; n < N; ++n) acc[r][n] = VT::load(o + r * D + d0 + n * W);
    for (int64_t j = 0; j < bk; ++j) {
      V vv[N];
      #pragma GCC unroll 4
      for (int n = 0; n < N; ++n) vv[n] = VT::load(v + j * ldv + d0 + n * W);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const V pb = VT::set1(p[r * BK + j]);
        #pragma GCC unroll 4
        for (int n = 0; n < N; ++n) acc[r][n] = VT::fma(pb, vv[n], acc[r][n]);
      }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 4
      for (int n = 0; n < N; ++n) VT::store(o + r * D + d0 + n * W, acc[r][n]);
  }

  template <int R>
  // Columns [d0, d0 + CB) when full, else [d0, d0 + W).
  static void PvRows(int rows, const float* p, const float* v, int64_t ldv, int64_t bk, float* o, int64_t D, int64_t d0,
                     bool full) {
    if (rows == R) {
      if (full) {
        PvBlock<R, NV>(p, v, ldv, bk, o, D, d0);
      } else {
        PvBlock<R, 1>(p, v, ldv, bk, o, D, d0);
      }
    } else if constexpr (R > 1) {
      PvRows<R - 1>(rows, p, v, ldv, bk, o, D, d0, full);
    }
  }

  // ------------------------------------------------------------ helpers

  template <typename T>
  static void LoadRow(const T* src, float* dst, int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(dst, src, sizeof(float) * n);
    } else {
      VT::HalfToFloatN(src, dst, n);
    }
  }

  // cos/sin rows for RoPE position `pos` as float pointers (converted into bufs for fp16).
  template <typename T>
  static void CosSin(const longctx_la_params& p, int64_t half, int64_t pos, const Bufs& b, const float** c,
                     const float** s) {
    const T* cc = static_cast<const T*>(p.cos_cache) + pos * half;
    const T* ss = static_cast<const T*>(p.sin_cache) + pos * half;
    if constexpr (std::is_same_v<T, float>) {
      *c = cc;
      *s = ss;
    } else {
      VT::HalfToFloatN(cc, b.cs, half);
      VT::HalfToFloatN(ss, b.sn, half);
      *c = b.cs;
      *s = b.sn;
    }
  }

  // ------------------------------------------------------------ one tile

  // What every tile of one work item shares.
  template <typename T>
  struct TileCtx {
    const Plan& plan;
    const Bufs& bf;
    const Pattern& pat;
    int64_t M, nrows, q0;
    const T* kbase;
    const T* vbase;
    bool rotate_keys, direct;
  };

  // One tile of bk keys: keys [kt, kt + bk) of the cache, or, when `cols` is set, the bk gathered keys
  // cols[0 .. bk) (rows copied into the K/V row buffers; causal mask per column).
  template <typename T>
  static void Tile(const TileCtx<T>& tc, const float* qv, TileKind kind, int64_t kt, int64_t bk, const int64_t* cols) {
    const Plan& plan = tc.plan;
    const longctx_la_params& p = *plan.p;
    const Bufs& bf = tc.bf;
    const Pattern& pat = tc.pat;
    const int64_t D = plan.D, M = tc.M, nrows = tc.nrows, q0 = tc.q0, half = plan.R / 2;
    const bool rotate_keys = tc.rotate_keys, direct = tc.direct, inter = p.rotary_interleaved != 0;
    const T* kbase = tc.kbase;
    const T* vbase = tc.vbase;
    const int ncb = static_cast<int>((bk + CB - 1) / CB);
    const int64_t cols_padded = ncb * CB;

    // K tile -> (rotated / converted rows) -> Kt [D][BK]
    const float* ksrc;
    if (cols != nullptr) {
      for (int64_t j = 0; j < bk; ++j) {
        LoadRow(kbase + cols[j] * D, bf.kr + j * D, D);
        LoadRow(vbase + cols[j] * D, bf.vs + j * D, D);
      }
      ksrc = bf.kr;
    } else if (std::is_same_v<T, float> && !rotate_keys) {
      ksrc = reinterpret_cast<const float*>(kbase + kt * D);
    } else {
      for (int64_t j = 0; j < bk; ++j) {
        float* kr = bf.kr + j * D;
        LoadRow(kbase + (kt + j) * D, kr, D);
        if (rotate_keys) {
          const float *c, *s;
          CosSin<T>(p, half, pat.key_position(kt + j), bf, &c, &s);
          RotateRow(kr, plan.R, c, s, inter);
        }
      }
      ksrc = bf.kr;
    }
    if (!direct) {
      VT::PackTransposed(ksrc, D, bk, D, bf.kt, BK);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = bk; j < cols_padded; ++j) bf.kt[d * BK + j] = 0.f;
    }

    // V tile
    const float* vp;
    if (cols != nullptr) {
      vp = bf.vs;
    } else if constexpr (std::is_same_v<T, float>) {
      vp = vbase + kt * D;
    } else {
      VT::HalfToFloatN(vbase + kt * D, bf.vs, bk * D);
      vp = bf.vs;
    }

    // S = Q Kt
    if (direct) {
      QkDirect(qv, M, D, ksrc, bk, bf.s);
    } else {
      // Column block outer: its D x CB slice of Kt stays in L1 for all row blocks (the whole Kt,
      // D x kBlockK, is as large as L1 at D = 128).
      for (int64_t r0 = 0; r0 < M; r0 += MR) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, M - r0));
        QkRows<MR>(rows, qv + r0 * D, D, bf.kt, bf.s + r0 * BK, ncb);
      }
    }

    // mask + online softmax
    for (int64_t row = 0; row < M; ++row) {
      float* s = bf.s + row * BK;
      if (cols != nullptr) {
        for (int64_t j = 0; j < bk; ++j)
          if (cols[j] > q0 + row % nrows) s[j] = -INFINITY;
      } else if (kind == TileKind::Partial) {
        pat.mask_row(q0 + row % nrows, kt, bk, s);
      }
      for (int64_t j = bk; j < cols_padded; ++j) s[j] = -INFINITY;
      V vmax = VT::set1(-INFINITY);
      for (int64_t j = 0; j < cols_padded; j += W) vmax = VT::max(vmax, VT::load(s + j));
      const float tile_max = VT::hmax(vmax);
      if (tile_max == -INFINITY) {
        for (int64_t j = 0; j < cols_padded; ++j) s[j] = 0.f;
        continue;
      }
      const float m_old = bf.m[row];
      const float m_new = std::max(m_old, tile_max);
      const V vm = VT::set1(m_new);
      V vsum = VT::zero();
      for (int64_t j = 0; j < cols_padded; j += W) {
        const V e = VT::exp(VT::sub(VT::load(s + j), vm));
        VT::store(s + j, e);
        vsum = VT::add(vsum, e);
      }
      const float alpha = m_old == -INFINITY ? 0.f : std::exp(m_old - m_new);
      bf.l[row] = bf.l[row] * alpha + VT::hsum(vsum);
      bf.m[row] = m_new;
      if (alpha != 1.f) {
        float* o = bf.o + row * D;
        const V va = VT::set1(alpha);
        for (int64_t d = 0; d < D; d += W) VT::store(o + d, VT::mul(VT::load(o + d), va));
      }
    }

    // O += P V
    // Column block outer: its bk x CB slice of V stays in L1 for all row blocks.
    for (int64_t d0 = 0; d0 < D;) {
      const bool full = d0 + CB <= D;
      for (int64_t r0 = 0; r0 < M; r0 += MR) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, M - r0));
        PvRows<MR>(rows, bf.s + r0 * BK, vp, D, bk, bf.o + r0 * D, D, d0, full);
      }
      d0 += full ? CB : W;
    }
  }

  // ------------------------------------------------------------ one work item

  template <typename T>
  static void RunItem(const Plan& plan, const Item& it, const Bufs& bf) {
    const longctx_la_params& p = *plan.p;
    const BatchInfo& bi = plan.batch[static_cast<size_t>(it.b)];
    const Pattern& pat = HeadPattern(bi, it.kvh);
    const SparseIndex* index = HeadIndex(bi, it.kvh);
    const int64_t D = plan.D, G = plan.G, H = p.num_heads, Hkv = p.kv_num_heads, S = p.seq_len;
    const int64_t nrows = it.i1 - it.i0, M = G * nrows, half = plan.R / 2;
    const int nvar = pat.num_variants();
    const int64_t q0 = bi.past + it.i0, q1 = bi.past + it.i1;
    const bool rotary = p.do_rotary != 0, inter = p.rotary_interleaved != 0;

    // Q: [variant][g * nrows + r][D], rotated per variant, scaled.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = it.kvh * G + g;
      for (int64_t r = 0; r < nrows; ++r) {
        const T* src = static_cast<const T*>(p.query) + ((it.b * S + it.i0 + r) * H + h) * D;
        LoadRow(src, bf.row, D);
        for (int v = 0; v < nvar; ++v) {
          float* dst = bf.q + (v * M + g * nrows + r) * D;
          std::memcpy(dst, bf.row, sizeof(float) * D);
          if (rotary) {
            const float *c, *s;
            CosSin<T>(p, half, pat.query_position(v, q0 + r), bf, &c, &s);
            RotateRow(dst, plan.R, c, s, inter);
          }
          for (int64_t d = 0; d < D; ++d) dst[d] *= bi.scale;
        }
      }
    }
    for (int64_t i = 0; i < M * D; ++i) bf.o[i] = 0.f;
    for (int64_t i = 0; i < M; ++i) {
      bf.m[i] = -INFINITY;
      bf.l[i] = 0.f;
    }

    const int64_t Tp = p.present_len;
    const T* kbase = static_cast<const T*>(p.present_key) + (it.b * Hkv + it.kvh) * Tp * D;
    const T* vbase = static_cast<const T*>(p.present_value) + (it.b * Hkv + it.kvh) * Tp * D;
    const bool rotate_keys = rotary && !pat.keys_prerotated();
    const bool direct = M <= kDirectRows;

    const TileCtx<T> tc{plan, bf, pat, M, nrows, q0, kbase, vbase, rotate_keys, direct};
    if (index != nullptr) {
      // vslash / xattn: the block's key ranges tile by tile (causal mask on the diagonal), then its
      // gathered columns kBlockK at a time. Rows of one item never cross a kSparseBlock block.
      const KeySet& set = index->blocks[static_cast<size_t>(it.i0 / kSparseBlock)];
      const float* qv = bf.q;
      for (size_t r = 0; r + 1 < set.ranges.size(); r += 2) {
        const int64_t k_begin = std::max(set.ranges[r], it.ks);
        const int64_t k_end = std::min({set.ranges[r + 1], it.ke, bi.total, q1});
        for (int64_t kt = k_begin; kt < k_end; kt += BK) {
          const int64_t ke = std::min(kt + BK, k_end);
          const TileKind kind = pat.classify(q0, q1, kt, ke);
          if (kind != TileKind::Empty) Tile<T>(tc, qv, kind, kt, ke - kt, nullptr);
        }
      }
      const int64_t* cb = std::lower_bound(set.cols.data(), set.cols.data() + set.cols.size(), it.ks);
      const int64_t* ce = std::lower_bound(cb, set.cols.data() + set.cols.size(), std::min({it.ke, bi.total, q1}));
      for (const int64_t* c = cb; c < ce; c += BK) Tile<T>(tc, qv, TileKind::Partial, 0, std::min<int64_t>(BK, ce - c), c);
    } else {
      Span spans[3];
      const int ns = pat.spans(q0, q1, spans);
      for (int si = 0; si < ns; ++si) {
        const int64_t k_begin = std::max(spans[si].k0, it.ks);
        const int64_t k_end = std::min({spans[si].k1, it.ke, bi.total});
        const float* qv = bf.q + spans[si].variant * M * D;
        for (int64_t kt = k_begin; kt < k_end; kt += BK) {
          const int64_t ke = std::min(kt + BK, k_end);
          const TileKind kind = pat.classify(q0, q1, kt, ke);
          if (kind != TileKind::Empty) Tile<T>(tc, qv, kind, kt, ke - kt, nullptr);
        }
      }
    }

    if (it.slot < 0) {
      for (int64_t row = 0; row < M; ++row) StoreRow(plan, it, row, bf.o + row * D, bf.m[row], bf.l[row]);
    } else {
      float* dst = plan.partials + it.slot * plan.slot_floats;
      std::memcpy(dst, bf.o, sizeof(float) * M * D);
      std::memcpy(dst + plan.max_rows * D, bf.m, sizeof(float) * M);
      std::memcpy(dst + plan.max_rows * D + plan.max_rows, bf.l, sizeof(float) * M);
    }
  }

  static void RunChunk(const Plan& plan, int64_t chunk, float* scratch) {
    const ChunkLayout lay = MakeChunkLayout(plan.max_rows, plan.D);
    auto part = [&](ChunkPart k) { return scratch + lay.offset[k]; };
    const Bufs bf{part(kPartQ),  part(kPartO),  part(kPartM),   part(kPartL),   part(kPartS),  part(kPartKt),
                  part(kPartKr), part(kPartVs), part(kPartRow), part(kPartCos), part(kPartSin)};
    const int64_t n = static_cast<int64_t>(plan.items.size());
    for (int64_t i = chunk; i < n; i += plan.nchunks) {
      if (plan.f16) {
        RunItem<uint16_t>(plan, plan.items[static_cast<size_t>(i)], bf);
      } else {
        RunItem<float>(plan, plan.items[static_cast<size_t>(i)], bf);
      }
    }
  }
};

}  // namespace longctx::la
