// KV-cache quantization kernels: symmetric int8 with one scale per channel, over a
// [tokens, channels] fp32 block (channels contiguous; rows `token_stride` elements apart).
//
//   absmax[c] = max_t |x[t,c]|
//   scale[c]  = absmax[c] / 127                          (0 for an all-zero channel)
//   q[t,c]    = clamp(rne(x[t,c] * (127 / absmax[c])), -127, 127)   (0 where scale is 0)
//   y[t,c]    = q[t,c] * scale[c]
// so |y - x| <= scale/2 (plus float rounding). rne = round half to even. The reciprocal is
// computed once per channel, so every ISA path gives bit-identical results. Inputs must be finite.
//
// Each entry point dispatches to the scalar / AVX2 / AVX-512 variant chosen by longctx/cpu.h.
#pragma once

#include <stdint.h>

#include "longctx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct longctx_kv_absmax_params {
  int64_t tokens, channels;
  const float* x;  int64_t x_token_stride;  // [tokens, channels]
  float* absmax;                            // out: [channels]
} longctx_kv_absmax_params;

typedef struct longctx_kv_quantize_params {
  int64_t tokens, channels;
  const float* x;  int64_t x_token_stride;  // [tokens, channels]
  int8_t* q;       int64_t q_token_stride;  // out: [tokens, channels]
  float* scales;                            // out: [channels]
} longctx_kv_quantize_params;

typedef struct longctx_kv_dequantize_params {
  int64_t tokens, channels;
  const int8_t* q;      int64_t q_token_stride;  // [tokens, channels]
  const float* scales;                           // [channels]
  float* y;             int64_t y_token_stride;  // out: [tokens, channels]
} longctx_kv_dequantize_params;

// Sizes may be 0 (nothing is read or written; absmax over 0 tokens is 0). LONGCTX_INVALID_ARGUMENT
// for null params/pointers, negative sizes, or a token stride smaller than `channels`.
longctx_status longctx_kv_absmax(const longctx_kv_absmax_params* params);
longctx_status longctx_kv_quantize_int8(const longctx_kv_quantize_params* params);
longctx_status longctx_kv_dequantize_int8(const longctx_kv_dequantize_params* params);

#ifdef __cplusplus
}  // extern "C"
#endif
