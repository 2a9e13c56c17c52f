// Vector exp for the SIMD tile loops (LongAttention, KIVI). AVX-512: Cephes expf (S. Moshier), range reduction x = n ln2 + r with
// ln2 split in two constants, degree-5 polynomial, scaling by 2^n through the exponent bits.
// Relative error ~2 ulp on [-87.3, 88.3]; inputs below -87.3 (masked scores, -inf) give exactly 0.
#pragma once

namespace longctx::la::cephes {
constexpr float kHi = 88.3762626647949f, kLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kC1 = 0.693359375f, kC2 = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace longctx::la::cephes

// Cheaper vector exp (AVX2 path): e^x = 2^t with t = x log2(e) = n + f, n = round(t), |f| <= 1/2;
// 2^f by its Taylor series e^(f ln2) = sum_k (f ln2)^k / k! to degree 6 (truncation <= 0.3466^7 / 7! =
// 1.2e-7 relative), 2^n through the exponent bits. The one rounding of t costs up to |t| 2^-24 relative:
// measured against double exp, 2.3e-7 relative on [-1, 0] (Cephes: 1.2e-7), 1.1e-6 on [-16, 0], and at
// most 1.7e-7 absolute anywhere (Cephes: 6.4e-8): far inside the op's 1e-5 agreement with ORT GQA.
// Against Cephes it drops the two-constant ln2 reduction and the upper clamp (softmax arguments are
// s - max <= 0): 15 vector ops instead of 20. Inputs below kLo (masked scores, -inf, NaN) give 0.
namespace longctx::la::exp2poly {
constexpr float kLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kC1 = 6.93147180559945309e-1f, kC2 = 2.40226506959100712e-1f, kC3 = 5.55041086648215800e-2f;
constexpr float kC4 = 9.61812910762847716e-3f, kC5 = 1.33335581464284434e-3f, kC6 = 1.54035303933816099e-4f;
}  // namespace longctx::la::exp2poly

// The two exps as functions, for translation units compiled with the matching ISA flags. `static`: internal linkage,
// so each ISA's unit keeps its own copy (an AVX-512 unit also sees __AVX2__ and compiles Exp2PolyAvx2 with EVEX
// encodings; the linker must never hand that copy to an AVX2 caller).
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace longctx::la {

// exp2poly on 8 lanes: arguments are s - max <= 0, so no upper clamp.
static inline __m256 Exp2PolyAvx2(__m256 x0) {
  using namespace exp2poly;
  const __m256 keep = _mm256_cmp_ps(x0, _mm256_set1_ps(kLo), _CMP_GE_OQ);
  const __m256 t = _mm256_mul_ps(_mm256_max_ps(x0, _mm256_set1_ps(kLo)), _mm256_set1_ps(kLog2e));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 y = _mm256_set1_ps(kC6);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(kC5));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(kC4));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(kC3));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(kC2));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(kC1));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}

}  // namespace longctx::la
#endif

#if defined(__AVX512F__)
namespace longctx::la {

// Cephes expf on 16 lanes.
static inline __m512 CephesExpAvx512(__m512 x0) {
  using namespace cephes;
  const __mmask16 keep = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(kLo), _CMP_GE_OQ);
  __m512 x = _mm512_min_ps(_mm512_max_ps(x0, _mm512_set1_ps(kLo)), _mm512_set1_ps(kHi));
  __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kC1), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kC2), x);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kP5));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(keep, _mm512_mul_ps(y, _mm512_castsi512_ps(e)));
}

}  // namespace longctx::la
#endif
