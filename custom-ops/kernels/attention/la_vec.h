// The vector operations of the SIMD tile loops, shared by LongAttention (long_attention_{scalar,avx2,avx512}.cc, whose
// traits add their register-block sizes and packing) and KIVI (kivi_{scalar,avx2,avx512}.cc, whose traits add tail
// loads): one struct per ISA, defined only in a translation unit compiled for that ISA (the AVX-512 flags also define
// __AVX2__, so the branches are exclusive). Anonymous namespace: internal linkage, so no inline member compiled for one
// ISA can be handed by the linker to a caller on another path (see la_exp_simd.h, kvquant_kernels.h).
#pragma once

#include <stdint.h>

#include "la_exp_simd.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace longctx::la {
namespace {

struct Avx512Vec {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static float hmax(V a) { return _mm512_reduce_max_ps(a); }
  static float hsum(V a) { return _mm512_reduce_add_ps(a); }
  static void hsum4(const V a[4], float* out) {
    for (int i = 0; i < 4; ++i) out[i] = _mm512_reduce_add_ps(a[i]);
  }
  static V exp(V x0) { return CephesExpAvx512(x0); }
};

}  // namespace
}  // namespace longctx::la

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace longctx::la {
namespace {

struct Avx2Vec {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static float hmax(V a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float hsum(V a) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  // out[i] = sum of the lanes of a[i], i < 4 (hadd tree).
  static void hsum4(const V a[4], float* out) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
  static V exp(V x0) { return Exp2PolyAvx2(x0); }
};

}  // namespace
}  // namespace longctx::la

#else
#include <cmath>

namespace longctx::la {
namespace {

struct ScalarVec {
  using V = float;
  static constexpr int W = 1;
  static V zero() { return 0.f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static float hmax(V a) { return a; }
  static float hsum(V a) { return a; }
  static void hsum4(const V a[4], float* out) {
    for (int i = 0; i < 4; ++i) out[i] = a[i];
  }
  static V exp(V x) { return x < -87.3f ? 0.f : std::exp(x); }
};

}  // namespace
}  // namespace longctx::la
#endif
