// LongAttention tile loop, AVX2 + FMA + F16C path (compiled with -mavx2 -mfma -mf16c):
// 8-wide ymm vectors, 6 x 16 register blocks (12 accumulators), exp from exp2poly (la_exp_simd.h).
#include <immintrin.h>

#include "la_exp_simd.h"
#include "la_transpose_avx2.h"
#include "la_tile_loop.h"

namespace longctx::la {
namespace {

struct Avx2Traits {
  using V = __m256;
  static constexpr int W = 8, MR = 6, NV = 2;
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
  // exp2poly (la_exp_simd.h): arguments are s - max <= 0, so no upper clamp.
  static V exp(V x0) { return Exp2PolyAvx2(x0); }
  static void PackTransposed(const float* src, int64_t lds, int64_t rows, int64_t D, float* kt, int64_t ldt) {
    PackTransposedAvx(src, lds, rows, D, kt, ldt);
  }
  static void HalfToFloatN(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  }
};

}  // namespace

const Table kAvx2 = {&TileLoop<Avx2Traits>::RunChunk, &TileLoop<Avx2Traits>::QkPacked};

}  // namespace longctx::la
