// Packs a K tile for the QK^T micro-kernel: kt[d * ldt + j] = src[j * lds + d] for j < rows, d < D
// (D a multiple of 8), with 8x8 AVX transposes (unpack / shuffle / permute2f128); leftover rows scalar.
// Included by the AVX2 and AVX-512 tile loops only (needs -mavx).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace longctx::la {
namespace {

inline void PackTransposedAvx(const float* src, int64_t lds, int64_t rows, int64_t D, float* kt, int64_t ldt) {
  int64_t j = 0;
  for (; j + 8 <= rows; j += 8) {
    for (int64_t d = 0; d < D; d += 8) {
      __m256 r[8], t[8], u[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (j + i) * lds + d);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(kt + (d + i) * ldt + j, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(kt + (d + i + 4) * ldt + j, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
      }
    }
  }
  for (; j < rows; ++j)
    for (int64_t d = 0; d < D; ++d) kt[d * ldt + j] = src[j * lds + d];
}

}  // namespace
}  // namespace longctx::la
