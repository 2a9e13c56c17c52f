// longctx.LongAttention (domain "longctx", since version 1, CPU EP): the ORT wrapper of the
// LongAttention kernel (kernels/include/longctx/long_attention.h).
//
// I/O mirrors com.microsoft.GroupQueryAttention so a lowering pass can swap the op type:
//   inputs  0 query [B,S,H*D]  1 key [B,S,Hkv*D]  2 value [B,S,Hkv*D]
//           3 past_key [B,Hkv,P,D] (optional)  4 past_value (optional)
//           5 seqlens_k int32 [B] (valid length - 1)  6 total_sequence_length int32 scalar
//           7 cos_cache [max_pos, R/2] (optional)  8 sin_cache (optional)
//   outputs 0 output [B,S,H*D]  1 present_key [B,Hkv,max(total_sequence_length, P),D]  2 present_value
//           3 lse (optional) float32 [B,H,S], natural log of each query row's softmax denominator
//   T = float32 or float16 (one op registration per type).
//   attrs   num_heads, kv_num_heads (required); scale (0 => 1/sqrt(D)); do_rotary, rotary_interleaved;
//           pattern "dense" | "streaming" | "dca"; sink, window (streaming); chunk_size, local_size,
//           trained_context (dca); the sparse prefill patterns' attributes and their per-KV-head overrides
//           head_pattern, head_vertical, ... (long_attention_heads.h); isa "auto" | "scalar" | "avx2" | "avx512" (tests). An attribute of another
//           pattern, an unknown pattern / isa value, and GQA's local_window_size / softcap / smooth_softmax
//           (not implemented here) are errors listing what is valid.
// When present_key's buffer is past_key's (IOBinding of one shared buffer) the S new tokens are
// written in place at rows [seqlens_k + 1 - S, seqlens_k + 1); otherwise the valid past is copied.
#pragma once

#include <cstdint>
#include <string>

#include "onnxruntime_cxx_api.h"

namespace longctx::ort {

// Creates the op for element type `type` (FLOAT or FLOAT16). The object must outlive every session.
OrtCustomOp* CreateLongAttentionOp(ONNXTensorElementDataType type);
void DestroyLongAttentionOp(OrtCustomOp* op);

}  // namespace longctx::ort
