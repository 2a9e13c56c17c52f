// LongAttention tile loop, scalar path (baseline flags): vector width 1, 4x4 register blocks.
#include <cmath>

#include "la_tile_loop.h"
#include "la_vec.h"

namespace longctx::la {
namespace {

struct ScalarTraits : ScalarVec {
  static constexpr int MR = 4, NV = 4;
  static void PackTransposed(const float* src, int64_t lds, int64_t rows, int64_t D, float* kt, int64_t ldt) {
    for (int64_t j = 0; j < rows; ++j)
      for (int64_t d = 0; d < D; ++d) kt[d * ldt + j] = src[j * lds + d];
  }
  static void HalfToFloatN(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  }
};

}  // namespace

const Table kScalar = {&TileLoop<ScalarTraits>::RunChunk, &TileLoop<ScalarTraits>::QkPacked};

}  // namespace longctx::la
