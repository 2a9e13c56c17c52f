// KIVI, AVX2 variant (-mavx2 -mfma -mf16c): 8 channels per step. Unpack broadcasts the 8 codes' bytes (4 bytes at
// 4 bits, 2 at 2 bits) to every lane and shifts each lane by its own amount (vpsrlvd); pack rounds 8 lanes with
// cvtps2dq (round half to even, as the scalar path) and ors the shifted codes together.
#include <immintrin.h>

#include "attention/la_vec.h"
#include "kivi/kivi_attend.h"
#include "kivi/kivi_kernels.h"

namespace longctx::kivi {
namespace {

void PackRow(const float* x, const float* zero, const float* inv, int64_t d, int bits, uint8_t* codes) {
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  const __m256i shifts = bits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                   : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  for (int64_t j = 0; j < d; j += 8) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(zero + j)), _mm256_loadu_ps(inv + j));
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256i c = _mm256_sllv_epi32(_mm256_cvtps_epi32(v), shifts);
    // or-reduce the 8 lanes (disjoint bits: a sum is an or)
    __m128i s = _mm_or_si128(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    s = _mm_or_si128(s, _mm_unpackhi_epi64(s, s));
    s = _mm_or_si128(s, _mm_srli_si128(s, 4));
    const uint32_t word = static_cast<uint32_t>(_mm_cvtsi128_si32(s));
    uint8_t* out = codes + j * bits / 8;
    out[0] = static_cast<uint8_t>(word);
    out[1] = static_cast<uint8_t>(word >> 8);
    if (bits == 4) {
      out[2] = static_cast<uint8_t>(word >> 16);
      out[3] = static_cast<uint8_t>(word >> 24);
    }
  }
}

// The 8 codes of channels [j, j + 8) as floats; BITS a constant, so the shifts, the byte offset and the load width
// fold (one broadcast load, vpsrlvd, vpand, vcvtdq2ps).
template <int BITS>
inline __m256 Codes8(const uint8_t* codes, int64_t j) {
  const uint8_t* in = codes + j * BITS / 8;
  uint32_t word;
  if constexpr (BITS == 4) {
    __builtin_memcpy(&word, in, 4);
  } else {
    uint16_t half;
    __builtin_memcpy(&half, in, 2);
    word = half;
  }
  const __m256i shifts = BITS == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28) : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                                             _mm256_set1_epi32((1 << BITS) - 1)));
}

template <int BITS>
void UnpackRowT(const uint8_t* codes, const float* scale, const float* zero, int64_t d, float* y) {
  for (int64_t j = 0; j < d; j += 8)
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(Codes8<BITS>(codes, j), _mm256_loadu_ps(scale + j), _mm256_loadu_ps(zero + j)));
}

void UnpackRow(const uint8_t* codes, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  bits == 4 ? UnpackRowT<4>(codes, scale, zero, d, y) : UnpackRowT<2>(codes, scale, zero, d, y);
}

template <int BITS>
void UnpackKeysT(const uint8_t* codes, int64_t rows, const float* scale, const float* zero, int64_t d, float* y) {
  const int64_t rb = d * BITS / 8;
  for (int64_t j = 0; j < d; j += 8) {  // channel-outer: the group's scale and zero stay in registers
    const __m256 s = _mm256_loadu_ps(scale + j), z = _mm256_loadu_ps(zero + j);
    for (int64_t r = 0; r < rows; ++r) _mm256_storeu_ps(y + r * d + j, _mm256_fmadd_ps(Codes8<BITS>(codes + r * rb, j), s, z));
  }
}

void UnpackKeys(const uint8_t* codes, int64_t rows, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  bits == 4 ? UnpackKeysT<4>(codes, rows, scale, zero, d, y) : UnpackKeysT<2>(codes, rows, scale, zero, d, y);
}

template <int BITS>
void UnpackValuesT(const uint8_t* codes, int64_t rows, const float* params, int64_t d, int64_t g, float* y) {
  const int64_t rb = d * BITS / 8, ng = d / g;
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = params + r * 2 * ng;
    const uint8_t* row = codes + r * rb;
    float* yr = y + r * d;
    for (int64_t k = 0; k < ng; ++k) {
      const __m256 s = _mm256_set1_ps(pr[k]), z = _mm256_set1_ps(pr[ng + k]);
      for (int64_t j = k * g; j < (k + 1) * g; j += 8) _mm256_storeu_ps(yr + j, _mm256_fmadd_ps(Codes8<BITS>(row, j), s, z));
    }
  }
}

void UnpackValues(const uint8_t* codes, int64_t rows, const float* params, int64_t d, int64_t g, int bits, float* y) {
  bits == 4 ? UnpackValuesT<4>(codes, rows, params, d, g, y) : UnpackValuesT<2>(codes, rows, params, d, g, y);
}

// 8 lanes; head_dim is a multiple of 8, so loadn / storen are whole vectors.
struct Avx2Traits : la::Avx2Vec {
  static V loadn(const float* p, int64_t) { return _mm256_loadu_ps(p); }
  static void storen(float* p, V v, int64_t) { _mm256_storeu_ps(p, v); }
};

}  // namespace

const Table kAvx2 = {&PackRow, &UnpackRow, &UnpackKeys, &UnpackValues, &Attend<Avx2Traits>::Run};

}  // namespace longctx::kivi
