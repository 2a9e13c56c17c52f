// Compute peak, scalar path: the baseline x86-64 roof. Baseline has SSE2 but no FMA, so the loop is a
// 4-lane multiply then add per step over 12 chains (2 dependent ops of ~4 cycles each; 12 chains keep
// both multiply/add ports busy).
#include <xmmintrin.h>

#include "peak.h"

namespace longctx::bench {

double FmaLoopScalar(int64_t iters, float a, float b, float* sink) {
  const __m128 va = _mm_set1_ps(a), vb = _mm_set1_ps(b);
  __m128 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm_set1_ps(static_cast<float>(k));
  for (int64_t i = 0; i < iters; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < 12; ++k) acc[k] = _mm_add_ps(_mm_mul_ps(acc[k], va), vb);
  }
  __m128 s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm_add_ps(s, acc[k]);
  *sink = _mm_cvtss_f32(s);
  return 2.0 * 4 * 12 * static_cast<double>(iters);
}

}  // namespace longctx::bench
