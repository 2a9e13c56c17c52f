// Internal: the per-ISA function table of the KIVI family (longctx/kivi.h).
//
// The dispatch file (kivi.cc) validates arguments, computes each group's scale / zero / reciprocal once (so every
// path writes the same codes) and runs the attention driver; the variants run the inner loops. The AVX2 / AVX-512
// variant files include only <immintrin.h>, this header, kivi_attend.h and attention/la_vec.h, no standard header (see
// kvquant_kernels.h for why).
#pragma once

#include <stdint.h>

namespace longctx::kivi {

struct Table {
  // codes of one token row: c[j] = clamp(rne((x[j] - zero[j]) * inv[j]), 0, 2^bits - 1), packed (kivi.h layout).
  // d is a multiple of 8.
  void (*pack_row)(const float* x, const float* zero, const float* inv, int64_t d, int bits, uint8_t* codes);
  // y[j] = code[j] * scale[j] + zero[j] for one token row (d a multiple of 8).
  void (*unpack_row)(const uint8_t* codes, const float* scale, const float* zero, int64_t d, int bits, float* y);
  // unpack_row over `rows` consecutive token rows sharing one scale / zero vector (a key group); codes rows d*bits/8
  // bytes apart, y rows d floats apart.
  void (*unpack_keys)(const uint8_t* codes, int64_t rows, const float* scale, const float* zero, int64_t d, int bits, float* y);
  // value rows: y[r][j] = code[r][j] * params[r][0][j / g] + params[r][1][j / g], params rows [2, d / g]; g a multiple of 8.
  void (*unpack_values)(const uint8_t* codes, int64_t rows, const float* params, int64_t d, int64_t g, int bits, float* y);
  // One online-softmax step of `rows` query rows (q: [rows][d], pre-scaled) over the keys / values k, v ([n][d]): row r
  // sees its first min(n, lim[r]) keys (lim nullptr: all n) and updates its running max m[r], sum l[r] and
  // unnormalised accumulator acc[r][d]. sc: scratch of n rounded up to 16 floats. (kivi_attend.h)
  void (*attend)(const float* q, int64_t rows, const float* k, const float* v, int64_t n, int64_t d, const int64_t* lim,
                 float* m, float* l, float* acc, float* sc);
};

extern const Table kScalar;  // kivi_scalar.cc
extern const Table kAvx2;    // kivi_avx2.cc
extern const Table kAvx512;  // kivi_avx512.cc

}  // namespace longctx::kivi
