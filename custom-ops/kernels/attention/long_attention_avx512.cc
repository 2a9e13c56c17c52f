// LongAttention tile loop, AVX-512 (F/BW/DQ/VL) + FMA + F16C path: 16-wide zmm vectors,
// 12 x 32 register blocks (24 accumulators of the 32 zmm registers).
#include <immintrin.h>

#include "la_exp_simd.h"
#include "la_transpose_avx2.h"
#include "la_tile_loop.h"

namespace longctx::la {
namespace {

struct Avx512Traits {
  using V = __m512;
  static constexpr int W = 16, MR = 12, NV = 2;
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
  static void PackTransposed(const float* src, int64_t lds, int64_t rows, int64_t D, float* kt, int64_t ldt) {
    PackTransposedAvx(src, lds, rows, D, kt, ldt);
  }
  static void HalfToFloatN(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    for (; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  }
};

}  // namespace

const Table kAvx512 = {&TileLoop<Avx512Traits>::RunChunk, &TileLoop<Avx512Traits>::QkPacked};

}  // namespace longctx::la
