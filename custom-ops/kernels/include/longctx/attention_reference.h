// Reference scaled-dot-product attention: the ORACLE every attention kernel is tested against.
//
//   out[b,h,i,:] = sum_j softmax_j(scale * <q[b,h,i,:], k[b,h/G,j,:]>) * v[b,h/G,j,:]
//   lse[b,h,i]   = log sum_j exp(scale * <q[b,h,i,:], k[b,h/G,j,:]>)          (natural log)
//
// over the keys j visible to query i (absolute position p = q_offset + i):
//   causal:        j <= p
//   local_window:  j >  p - local_window   (i.e. the current token and local_window-1 before it;
//                  the convention of com.microsoft.GroupQueryAttention; with causal = 0 the
//                  window only bounds from below)
// GQA grouping: G = q_heads / kv_heads query heads share one KV head (h / G).
// Dot products, softmax and the weighted sum accumulate in double; results are rounded to float once.
// A query that sees no key gets out = 0 and lse = -inf.
// Single-threaded, no SIMD on purpose: it is the yardstick, not a fast path.
#pragma once

#include <stdint.h>

#include "longctx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// Every tensor is addressed as [batch, head, token, dim] with the strides below (in elements);
// the dim axis is contiguous (stride 1). E.g. ORT's query [B, S, H*D]: stride_b = S*H*D,
// stride_h = D, stride_s = H*D; a [B, H, T, D] cache: stride_b = H*T*D, stride_h = T*D, stride_s = D.
typedef struct longctx_attention_reference_params {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, head_dim;
  int64_t q_offset;      // absolute position of query 0; keys sit at 0..kv_len-1 (usually kv_len - q_len)
  float scale;           // 0 => 1/sqrt(head_dim)
  int causal;            // nonzero: query at p sees keys j <= p
  int64_t local_window;  // > 0: keys in (p - local_window, p]; <= 0: no window

  const float* q;  int64_t q_stride_b, q_stride_h, q_stride_s;        // [batch, q_heads, q_len, head_dim]
  const float* k;  int64_t k_stride_b, k_stride_h, k_stride_s;        // [batch, kv_heads, kv_len, head_dim]
  const float* v;  int64_t v_stride_b, v_stride_h, v_stride_s;        // [batch, kv_heads, kv_len, head_dim]
  float* out;      int64_t out_stride_b, out_stride_h, out_stride_s;  // [batch, q_heads, q_len, head_dim]
  float* lse;      int64_t lse_stride_b, lse_stride_h;                // optional [batch, q_heads, q_len]
                                                                      // (token stride 1); NULL = not wanted
} longctx_attention_reference_params;

// LONGCTX_INVALID_ARGUMENT for: null params or tensors (when the output is non-empty), sizes <= 0
// (q_len / kv_len may be 0), q_heads not a multiple of kv_heads, q_offset < 0.
longctx_status longctx_attention_reference(const longctx_attention_reference_params* params);

#ifdef __cplusplus
}  // extern "C"
#endif
