// kvquant, AVX2 variant (compiled with -mavx2 -mfma -mf16c): 8 channels per step, token-outer so
// the input streams row by row; the channel tail (< 8) runs the scalar formula. Bit-identical to
// kvquant_scalar.cc: max, one multiply, clamp, cvtps2dq (round half to even), saturating packs.
#include <immintrin.h>

#include "kvquant/kvquant_kernels.h"

namespace longctx::kvquant {
namespace {

inline float ScalarAbs(float v) { return v < 0.0f ? -v : v; }

void Absmax(const float* x, int64_t tokens, int64_t channels, int64_t xs, float* absmax) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const int64_t vec_end = channels - channels % 8;
  for (int64_t c = 0; c < channels; ++c) absmax[c] = 0.0f;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    int64_t c = 0;
    for (; c < vec_end; c += 8) {
      const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(row + c));
      _mm256_storeu_ps(absmax + c, _mm256_max_ps(_mm256_loadu_ps(absmax + c), a));
    }
    for (; c < channels; ++c) {
      const float a = ScalarAbs(row[c]);
      if (a > absmax[c]) absmax[c] = a;
    }
  }
}

void Quantize(const float* x, int64_t tokens, int64_t channels, int64_t xs, const float* inv, int8_t* q, int64_t qs) {
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const int64_t vec_end = channels - channels % 8;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    int8_t* out = q + t * qs;
    int64_t c = 0;
    for (; c < vec_end; c += 8) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(inv + c));
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      const __m256i i32 = _mm256_cvtps_epi32(v);
      const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + c), _mm_packs_epi16(i16, i16));
    }
    for (; c < channels; ++c) {
      float v = row[c] * inv[c];
      v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
      out[c] = static_cast<int8_t>(_mm_cvtss_si32(_mm_set_ss(v)));
    }
  }
}

void Dequantize(const int8_t* q, int64_t tokens, int64_t channels, int64_t qs, const float* scale, float* y,
                int64_t ys) {
  const int64_t vec_end = channels - channels % 8;
  for (int64_t t = 0; t < tokens; ++t) {
    const int8_t* row = q + t * qs;
    float* out = y + t * ys;
    int64_t c = 0;
    for (; c < vec_end; c += 8) {
      const __m256i i32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
      _mm256_storeu_ps(out + c, _mm256_mul_ps(_mm256_cvtepi32_ps(i32), _mm256_loadu_ps(scale + c)));
    }
    for (; c < channels; ++c) out[c] = static_cast<float>(row[c]) * scale[c];
  }
}

}  // namespace

const Table kAvx2 = {&Absmax, &Quantize, &Dequantize};

}  // namespace longctx::kvquant
