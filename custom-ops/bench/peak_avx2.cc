// Compute peak, AVX2 path: 10 independent 8-lane FMA chains (2 FMA ports x 4-5 cycles latency).
#include <immintrin.h>

#include "peak.h"

namespace longctx::bench {

double FmaLoopAvx2(int64_t iters, float a, float b, float* sink) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  __m256 acc[10];
  for (int k = 0; k < 10; ++k) acc[k] = _mm256_set1_ps(static_cast<float>(k));
  for (int64_t i = 0; i < iters; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < 10; ++k) acc[k] = _mm256_fmadd_ps(acc[k], va, vb);
  }
  __m256 s = acc[0];
  for (int k = 1; k < 10; ++k) s = _mm256_add_ps(s, acc[k]);
  *sink = _mm256_cvtss_f32(s);
  return 2.0 * 8 * 10 * static_cast<double>(iters);
}

}  // namespace longctx::bench
