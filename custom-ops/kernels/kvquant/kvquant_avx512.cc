// kvquant, AVX-512 variant (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c):
// 16 channels per step; the channel tail uses masked loads/stores instead of a scalar loop.
// Bit-identical to kvquant_scalar.cc: max, one multiply, clamp, vcvtps2dq (round half to even),
// vpmovsdb (saturating narrow; the clamp already bounds it).
#include <immintrin.h>

#include "kvquant/kvquant_kernels.h"

namespace longctx::kvquant {
namespace {

inline __mmask16 TailMask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

void Absmax(const float* x, int64_t tokens, int64_t channels, int64_t xs, float* absmax) {
  for (int64_t c = 0; c < channels; c += 16) {
    const __mmask16 m = channels - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(channels - c);
    _mm512_mask_storeu_ps(absmax + c, m, _mm512_setzero_ps());
  }
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    for (int64_t c = 0; c < channels; c += 16) {
      const __mmask16 m = channels - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(channels - c);
      const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, row + c));
      _mm512_mask_storeu_ps(absmax + c, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, absmax + c), a));
    }
  }
}

void Quantize(const float* x, int64_t tokens, int64_t channels, int64_t xs, const float* inv, int8_t* q, int64_t qs) {
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * xs;
    int8_t* out = q + t * qs;
    for (int64_t c = 0; c < channels; c += 16) {
      const __mmask16 m = channels - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(channels - c);
      __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + c), _mm512_maskz_loadu_ps(m, inv + c));
      v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
      _mm512_mask_cvtsepi32_storeu_epi8(out + c, m, _mm512_cvtps_epi32(v));
    }
  }
}

void Dequantize(const int8_t* q, int64_t tokens, int64_t channels, int64_t qs, const float* scale, float* y,
                int64_t ys) {
  for (int64_t t = 0; t < tokens; ++t) {
    const int8_t* row = q + t * qs;
    float* out = y + t * ys;
    for (int64_t c = 0; c < channels; c += 16) {
      const __mmask16 m = channels - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(channels - c);
      const __m512i i32 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, row + c));
      _mm512_mask_storeu_ps(out + c, m, _mm512_mul_ps(_mm512_cvtepi32_ps(i32), _mm512_maskz_loadu_ps(m, scale + c)));
    }
  }
}

}  // namespace

const Table kAvx512 = {&Absmax, &Quantize, &Dequantize};

}  // namespace longctx::kvquant
