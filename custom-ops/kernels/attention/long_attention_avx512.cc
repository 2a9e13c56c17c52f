// LongAttention tile loop, AVX-512 (F/BW/DQ/VL) + FMA + F16C path: 16-wide zmm vectors,
// 12 x 32 register blocks (24 accumulators of the 32 zmm registers).
#include <immintrin.h>

#include "la_vec.h"
#include "la_transpose_avx2.h"
#include "la_tile_loop.h"

namespace longctx::la {
namespace {

struct Avx512Traits : Avx512Vec {
  static constexpr int MR = 12, NV = 2;
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
