// LongAttention tile loop, AVX2 + FMA + F16C path (compiled with -mavx2 -mfma -mf16c):
// 8-wide ymm vectors, 6 x 16 register blocks (12 accumulators), exp from exp2poly (la_exp_simd.h).
#include <immintrin.h>

#include "la_vec.h"
#include "la_transpose_avx2.h"
#include "la_tile_loop.h"

namespace longctx::la {
namespace {

struct Avx2Traits : Avx2Vec {
  static constexpr int MR = 6, NV = 2;
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
