// LongAttention tile loop, scalar path (baseline flags): vector width 1, 4x4 register blocks.
#include <cmath>

#include "la_tile_loop.h"

namespace longctx::la {
namespace {

struct ScalarTraits {
  using V = float;
  static constexpr int W = 1, MR = 4, NV = 4;
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
