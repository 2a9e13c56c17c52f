// Internal: the per-ISA function table of the kvquant family (longctx/kvquant.h).
//
// The dispatch file (kvquant.cc) validates arguments and computes the per-channel reciprocals once;
// the variants only run loops over already-checked pointers. Variants are compiled with their own
// ISA flags (kvquant_avx2.cc: -mavx2 -mfma -mf16c, kvquant_avx512.cc: -mavx512f/bw/dq/vl ...), so they
// include only <immintrin.h> and this header: an inline function from a standard header instantiated
// in an AVX-512 object could be picked by the linker for every caller (one-definition rule) and
// fault on a CPU without AVX-512.
#pragma once

#include <stdint.h>

namespace longctx::kvquant {

struct Table {
  // absmax[c] = max_t |x[t*xs + c]|, for c < channels (absmax is fully overwritten).
  void (*absmax)(const float* x, int64_t tokens, int64_t channels, int64_t xs, float* absmax);
  // q[t*qs + c] = clamp(rne(x[t*xs + c] * inv_scale[c]), -127, 127)
  void (*quantize)(const float* x, int64_t tokens, int64_t channels, int64_t xs, const float* inv_scale, int8_t* q,
                   int64_t qs);
  // y[t*ys + c] = q[t*qs + c] * scale[c]
  void (*dequantize)(const int8_t* q, int64_t tokens, int64_t channels, int64_t qs, const float* scale, float* y,
                     int64_t ys);
};

extern const Table kScalar;  // kvquant_scalar.cc
extern const Table kAvx2;    // kvquant_avx2.cc
extern const Table kAvx512;  // kvquant_avx512.cc

}  // namespace longctx::kvquant
