// Compute peak, AVX-512 path: 12 independent 16-lane FMA chains.
#include <immintrin.h>

#include "peak.h"

namespace longctx::bench {

double FmaLoopAvx512(int64_t iters, float a, float b, float* sink) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  __m512 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(static_cast<float>(k));
  for (int64_t i = 0; i < iters; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], va, vb);
  }
  __m512 s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, acc[k]);
  *sink = _mm512_reduce_add_ps(s);
  return 2.0 * 16 * 12 * static_cast<double>(iters);
}

}  // namespace longctx::bench
