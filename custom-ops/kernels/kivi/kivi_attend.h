// The fused attention step of the KIVI driver (Table::attend), instantiated once per ISA: kivi_scalar.cc,
// kivi_avx2.cc and kivi_avx512.cc include this file with their vector traits VT (W lanes; loadn / storen touch
// min(W, left) lanes, so head_dim needs only be a multiple of 8 on the 16-lane path).
//
// The driver dequantizes whole key groups (about 128 keys) and their values once into tiles (L1) shared by all query
// rows of the kv head (and passes fp32 residual tiles as they are); per row r this runs one online-softmax step (Milakov & Gimelshein 2018; Dao et al. 2022, Alg. 1) over the
// tile's first cnt_r keys, without a call per key:
//   s_k  = q_r . K_k                  4 keys at a time, W channels per fma, one 4-way horizontal sum
//   m'   = max(m_r, max_k s_k)        s padded with -inf to a multiple of W
//   p_k  = exp(s_k - m')              VT::exp (la_vec.h: la_exp_simd.h's exps), -inf padding gives 0
//   l_r  = l_r e^(m_r - m') + sum_k p_k
//   O_r  = O_r e^(m_r - m') + sum_k p_k V_k   up to 4 W-channel accumulators (x2: even / odd keys) in registers
// q is pre-multiplied by the softmax scale. No standard header: the AVX2 / AVX-512 instantiations must not emit
// inline standard-library functions the linker could hand to a baseline caller (see kivi_kernels.h).
#pragma once

#include <stdint.h>

namespace longctx::kivi {

template <class VT>
struct Attend {
  using V = typename VT::V;
  static constexpr int W = VT::W;

  // acc[0 .. N W) (clipped to d - j0 channels) = acc e^(m - m') + sum_k p_k V_k, N vectors in registers.
  template <int N>
  static void PvBlock(const float* p, const float* v, int64_t cnt, int64_t d, int64_t j0, float corr, float* acc) {
    V a[N], b[N];  // even / odd keys: two chains per vector halve the fma latency per key; the unroll pragmas keep
                   // a[] and b[] in registers (without them GCC spills them every key)
    const V c = VT::set1(corr);
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) {
      a[i] = VT::mul(VT::loadn(acc + j0 + i * W, d - j0 - i * W), c);
      b[i] = VT::zero();
    }
    int64_t k = 0;
    for (; k + 2 <= cnt; k += 2) {
      const V pa = VT::set1(p[k]), pb = VT::set1(p[k + 1]);
      const float* va = v + k * d + j0;
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) {
        a[i] = VT::fma(pa, VT::loadn(va + i * W, d - j0 - i * W), a[i]);
        b[i] = VT::fma(pb, VT::loadn(va + d + i * W, d - j0 - i * W), b[i]);
      }
    }
    if (k < cnt) {
      const V pa = VT::set1(p[k]);
#pragma GCC unroll 4
      for (int i = 0; i < N; ++i) a[i] = VT::fma(pa, VT::loadn(v + k * d + j0 + i * W, d - j0 - i * W), a[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < N; ++i) VT::storen(acc + j0 + i * W, VT::add(a[i], b[i]), d - j0 - i * W);
  }

  // One row against keys k / values v ([n][d] rows); lim[r] (nullptr: n) caps the keys row r sees (causal residual).
  // sc: scratch of at least n rounded up to 16 floats.
  static void Run(const float* q, int64_t rows, const float* k, const float* v, int64_t n, int64_t d, const int64_t* lim,
                  float* m, float* l, float* acc, float* sc) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t cnt = lim == nullptr || lim[r] > n ? n : lim[r];
      if (cnt <= 0) continue;
      const float* qr = q + r * d;
      int64_t t = 0;
      for (; t + 4 <= cnt; t += 4) {
        const float* kt = k + t * d;
        V a0 = VT::zero(), a1 = VT::zero(), a2 = VT::zero(), a3 = VT::zero();  // 4 keys' partial dots, in registers
        for (int64_t j = 0; j < d; j += W) {
          const V qj = VT::loadn(qr + j, d - j);
          a0 = VT::fma(qj, VT::loadn(kt + j, d - j), a0);
          a1 = VT::fma(qj, VT::loadn(kt + d + j, d - j), a1);
          a2 = VT::fma(qj, VT::loadn(kt + 2 * d + j, d - j), a2);
          a3 = VT::fma(qj, VT::loadn(kt + 3 * d + j, d - j), a3);
        }
        const V a[4] = {a0, a1, a2, a3};
        VT::hsum4(a, sc + t);
      }
      for (; t < cnt; ++t) {
        V a = VT::zero();
        for (int64_t j = 0; j < d; j += W) a = VT::fma(VT::loadn(qr + j, d - j), VT::loadn(k + t * d + j, d - j), a);
        sc[t] = VT::hsum(a);
      }
      const int64_t padded = (cnt + W - 1) / W * W;
      for (int64_t i = cnt; i < padded; ++i) sc[i] = -__builtin_inff();
      V mv = VT::set1(m[r]);
      for (int64_t i = 0; i < padded; i += W) mv = VT::max(mv, VT::load(sc + i));
      const float mx = VT::hmax(mv);
      const float corr = VT::hmax(VT::exp(VT::set1(m[r] - mx)));  // exp(-inf) = 0 on the row's first keys
      const V mb = VT::set1(mx);
      V sum = VT::zero();
      for (int64_t i = 0; i < padded; i += W) {
        const V e = VT::exp(VT::sub(VT::load(sc + i), mb));
        VT::store(sc + i, e);
        sum = VT::add(sum, e);
      }
      l[r] = l[r] * corr + VT::hsum(sum);
      m[r] = mx;
      float* ar = acc + r * d;
      int64_t j0 = 0;
      for (; d - j0 >= 4 * W; j0 += 4 * W) PvBlock<4>(sc, v, cnt, d, j0, corr, ar);
      switch ((d - j0 + W - 1) / W) {
        case 3: PvBlock<3>(sc, v, cnt, d, j0, corr, ar); break;
        case 2: PvBlock<2>(sc, v, cnt, d, j0, corr, ar); break;
        case 1: PvBlock<1>(sc, v, cnt, d, j0, corr, ar); break;
        default: break;
      }
    }
  }
};

}  // namespace longctx::kivi
