// kvquant, scalar variant (baseline x86-64 flags): the plain loops the SIMD variants must match bit
// for bit. Conversion uses cvtss2si (SSE, round-half-even under the default MXCSR), the same rounding
// as the packed cvtps2dq of the SIMD variants.
#include <xmmintrin.h>

#include "kvquant/kvquant_kernels.h"

namespace longctx::kvquant {
namespace {

void Absmax(const float* x, int64_t tokens, int64_t channels, int64_t xs, float* absmax) {
  for (int64_t c = 0; c < channels; ++c) absmax[c] = 0.0f;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    for (int64_t c = 0; c < channels; ++c) {
      const float a = row[c] < 0.0f ? -row[c] : row[c];
      if (a > absmax[c]) absmax[c] = a;
    }
  }
}

void Quantize(const float* x, int64_t tokens, int64_t channels, int64_t xs, const float* inv, int8_t* q, int64_t qs) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    int8_t* out = q + t * qs;
    for (int64_t c = 0; c < channels; ++c) {
      float v = row[c] * inv[c];
      v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
      out[c] = static_cast<int8_t>(_mm_cvtss_si32(_mm_set_ss(v)));
    }
  }
}

void Dequantize(const int8_t* q, int64_t tokens, int64_t channels, int64_t qs, const float* scale, float* y,
                int64_t ys) {
  for (int64_t t = 0; t < tokens; ++t) {
    const int8_t* row = q + t * qs;
    float* out = y + t * ys;
    for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<float>(row[c]) * scale[c];
  }
}

}  // namespace

const Table kScalar = {&Absmax, &Quantize, &Dequantize};

}  // namespace longctx::kvquant
