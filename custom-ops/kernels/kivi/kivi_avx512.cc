// KIVI, AVX-512 variant (-mavx512f/bw/dq/vl -mfma): 16 channels per step (head_dim is a multiple of 8, so an odd
// 8-channel tail runs masked). Unpack places the code word(s) in every lane and shifts each lane by its own amount
// (vpsrlvd); pack rounds with cvtps2dq (round half to even, as the scalar path) and ors the shifted codes.
#include <immintrin.h>

#include "attention/la_vec.h"
#include "kivi/kivi_attend.h"
#include "kivi/kivi_kernels.h"

namespace longctx::kivi {
namespace {

// Codes of 16 channels (or 8 under the tail mask) starting at channel j, in their lanes.
inline __m512i Codes(const uint8_t* codes, int64_t j, int bits, bool half) {
  const uint8_t* in = codes + j * bits / 8;
  if (bits == 2) {
    uint32_t word = static_cast<uint32_t>(in[0]) | static_cast<uint32_t>(in[1]) << 8;
    if (!half) word |= static_cast<uint32_t>(in[2]) << 16 | static_cast<uint32_t>(in[3]) << 24;
    const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(word)), shifts), _mm512_set1_epi32(3));
  }
  uint32_t w0 = static_cast<uint32_t>(in[0]) | static_cast<uint32_t>(in[1]) << 8 | static_cast<uint32_t>(in[2]) << 16 |
                static_cast<uint32_t>(in[3]) << 24;
  uint32_t w1 = 0;
  if (!half)
    w1 = static_cast<uint32_t>(in[4]) | static_cast<uint32_t>(in[5]) << 8 | static_cast<uint32_t>(in[6]) << 16 |
         static_cast<uint32_t>(in[7]) << 24;
  const __m512i words = _mm512_inserti32x8(_mm512_castsi256_si512(_mm256_set1_epi32(static_cast<int>(w0))),
                                           _mm256_set1_epi32(static_cast<int>(w1)), 1);
  const __m512i shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  return _mm512_and_si512(_mm512_srlv_epi32(words, shifts), _mm512_set1_epi32(15));
}

void PackRow(const float* x, const float* zero, const float* inv, int64_t d, int bits, uint8_t* codes) {
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  const __m512i shifts = bits == 4 ? _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28)
                                   : _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t j = 0; j < d; j += 16) {
    const bool half = d - j < 16;
    const __mmask16 m = half ? static_cast<__mmask16>(0xFF) : static_cast<__mmask16>(0xFFFF);
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, zero + j)),
                             _mm512_maskz_loadu_ps(m, inv + j));
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m512i c = _mm512_maskz_mov_epi32(m, _mm512_sllv_epi32(_mm512_cvtps_epi32(v), shifts));
    uint8_t* out = codes + j * bits / 8;
    if (bits == 2) {
      const uint32_t word = static_cast<uint32_t>(_mm512_reduce_or_epi32(c));
      const int n = half ? 2 : 4;
      for (int k = 0; k < n; ++k) out[k] = static_cast<uint8_t>(word >> (8 * k));
    } else {
      const uint32_t w0 = static_cast<uint32_t>(_mm512_mask_reduce_or_epi32(0x00FF, c));
      const uint32_t w1 = static_cast<uint32_t>(_mm512_mask_reduce_or_epi32(0xFF00, c));
      for (int k = 0; k < 4; ++k) out[k] = static_cast<uint8_t>(w0 >> (8 * k));
      if (!half)
        for (int k = 0; k < 4; ++k) out[4 + k] = static_cast<uint8_t>(w1 >> (8 * k));
    }
  }
}

void UnpackRow(const uint8_t* codes, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  for (int64_t j = 0; j < d; j += 16) {
    const bool half = d - j < 16;
    const __mmask16 m = half ? static_cast<__mmask16>(0xFF) : static_cast<__mmask16>(0xFFFF);
    const __m512 c = _mm512_cvtepi32_ps(Codes(codes, j, bits, half));
    _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(c, _mm512_maskz_loadu_ps(m, scale + j), _mm512_maskz_loadu_ps(m, zero + j)));
  }
}

void UnpackKeys(const uint8_t* codes, int64_t rows, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  const int64_t rb = d * bits / 8;
  for (int64_t j = 0; j < d; j += 16) {  // channel-outer: the group's scale and zero stay in registers
    const bool half = d - j < 16;
    const __mmask16 m = half ? static_cast<__mmask16>(0xFF) : static_cast<__mmask16>(0xFFFF);
    const __m512 s = _mm512_maskz_loadu_ps(m, scale + j), z = _mm512_maskz_loadu_ps(m, zero + j);
    for (int64_t r = 0; r < rows; ++r)
      _mm512_mask_storeu_ps(y + r * d + j, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(Codes(codes + r * rb, j, bits, half)), s, z));
  }
}

// Value rows: 16 channels per step, the scale / zero of each 8-channel half broadcast from its group (g % 8 == 0).
void UnpackValues(const uint8_t* codes, int64_t rows, const float* params, int64_t d, int64_t g, int bits, float* y) {
  const int64_t rb = d * bits / 8, ng = d / g;
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = params + r * 2 * ng;
    for (int64_t j = 0; j < d; j += 16) {
      const bool half = d - j < 16;
      const __mmask16 m = half ? static_cast<__mmask16>(0xFF) : static_cast<__mmask16>(0xFFFF);
      const int64_t g0 = j / g, g1 = half ? g0 : (j + 8) / g;
      const __m512 s = _mm512_insertf32x8(_mm512_set1_ps(pr[g0]), _mm256_set1_ps(pr[g1]), 1);
      const __m512 z = _mm512_insertf32x8(_mm512_set1_ps(pr[ng + g0]), _mm256_set1_ps(pr[ng + g1]), 1);
      _mm512_mask_storeu_ps(y + r * d + j, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(Codes(codes + r * rb, j, bits, half)), s, z));
    }
  }
}

// 16 lanes; loadn / storen mask an 8-channel tail (head_dim a multiple of 8).
struct Avx512Traits : la::Avx512Vec {
  static __mmask16 Mask(int64_t left) { return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u); }
  static V loadn(const float* p, int64_t left) { return _mm512_maskz_loadu_ps(Mask(left), p); }
  static void storen(float* p, V v, int64_t left) { _mm512_mask_storeu_ps(p, Mask(left), v); }
};

}  // namespace

const Table kAvx512 = {&PackRow, &UnpackRow, &UnpackKeys, &UnpackValues, &Attend<Avx512Traits>::Run};

}  // namespace longctx::kivi
