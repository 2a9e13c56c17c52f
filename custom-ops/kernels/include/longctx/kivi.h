// KIVI: asymmetric 2 / 4-bit KV cache (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization
// for KV Cache", arXiv:2402.02750), and attention over [quantized prefix | fp32 residual].
//
// Quantization (b = bits, qmax = 2^b - 1, over one group of values x):
//   zero = min(x), scale = (max(x) - min(x)) / qmax, inv = scale > 0 ? 1 / scale : 0
//   q    = clamp(rne((x - zero) * inv), 0, qmax)          y = q * scale + zero
// so |y - x| <= scale / 2 (plus float rounding). scale and inv are computed once per group by the dispatch
// file, so every ISA path writes the same codes.
//   keys:   PER CHANNEL: a group is `group` consecutive tokens of one channel (the paper's outlier channels keep
//           their own range); params [tokens / group, 2, head_dim] = scale row, then zero row.
//   values: PER TOKEN: a group is `group` consecutive channels of one token; params [tokens, 2, head_dim / group].
// Codes of both: [tokens, head_dim * b / 8] bytes, token-major; channel c sits in byte c / (8 / b) at bit
// b * (c % (8 / b)) (low bits first). head_dim must be a multiple of `group` for values and of 8 for codes.
//
// Attention (longctx_kivi_attention): for each (batch, kv head) the keys and values of the call are, in order,
//   [quantized prefix: Pq tokens (Pq a multiple of group)] [past residual: Rp fp32 tokens] [the S new tokens]
// New token i sits at position Pq + Rp + i, sees everything before it and itself (causal), RoPE (GQA's
// convention, half-split or interleaved) rotates q and the new k at their positions; the prefix and the past
// residual hold keys already rotated. The new keys / values are appended to the residual in the present
// outputs [B, Hkv, Rp + S, D]; folding the residual into the quantized store is the caller's (the runtime's KV
// manager; the paper's rule: whenever the residual holds R + group tokens, the oldest group is quantized).
// Softmax runs online (Milakov & Gimelshein 2018) over prefix groups dequantized tile by tile.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "longctx/long_attention.h"
#include "longctx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct longctx_kivi_quant_params {
  int64_t bits;      // 2 or 4
  int64_t group;     // tokens per key group / channels per value group (> 0)
  int64_t tokens;    // keys: a multiple of group
  int64_t head_dim;  // a multiple of 8; values: also of group
  const float* x;    int64_t x_token_stride;  // [tokens, head_dim]
  uint8_t* codes;    // out (quantize) / in (dequantize): [tokens, head_dim * bits / 8]
  float* qparams;    // keys: [tokens / group, 2, head_dim]; values: [tokens, 2, head_dim / group]
  float* y;          int64_t y_token_stride;  // dequantize out: [tokens, head_dim]
} longctx_kivi_quant_params;

longctx_status longctx_kivi_quantize_keys(const longctx_kivi_quant_params* p);
longctx_status longctx_kivi_quantize_values(const longctx_kivi_quant_params* p);
longctx_status longctx_kivi_dequantize_keys(const longctx_kivi_quant_params* p);
longctx_status longctx_kivi_dequantize_values(const longctx_kivi_quant_params* p);

typedef struct longctx_kivi_attention_params {
  int64_t batch, seq_len, num_heads, kv_num_heads, head_dim, bits, group;
  const float* query;   // [B, S, H * D]
  const float* key;     // [B, S, Hkv * D]
  const float* value;   // [B, S, Hkv * D]
  // quantized prefix, Pq tokens per (b, kv head), contiguous per (b, kv head):
  int64_t quant_len;                // Pq (a multiple of group; 0: the pointers below may be NULL)
  const uint8_t* key_codes;         // [B, Hkv, Pq, D * bits / 8]
  const float* key_params;          // [B, Hkv, Pq / group, 2, D]
  const uint8_t* value_codes;       // [B, Hkv, Pq, D * bits / 8]
  const float* value_params;        // [B, Hkv, Pq, 2, D / group]
  int64_t residual_len;             // Rp
  const float* past_key;            // [B, Hkv, Rp, D] (NULL when Rp is 0)
  const float* past_value;
  float* present_key;               // out: [B, Hkv, Rp + S, D]
  float* present_value;
  float* output;                    // out: [B, S, H * D]
  int do_rotary, rotary_interleaved;
  const float* cos_cache;           // [max_pos, rotary_dim / 2]
  const float* sin_cache;
  int64_t rotary_dim, max_pos;
  float scale;                      // 0 => 1 / sqrt(D)
  longctx_parallel_for_fn parallel_for;  // optional
  void* executor;
} longctx_kivi_attention_params;

// On anything but LONGCTX_OK a one-line message is written to err (when not NULL); nothing is written before the
// checks pass.
longctx_status longctx_kivi_attention(const longctx_kivi_attention_params* p, char* err, size_t err_len);

#ifdef __cplusplus
}  // extern "C"
#endif
