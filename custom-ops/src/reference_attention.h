// ReferenceAttention (domain "longctx", version 1): exact scaled-dot-product
// attention on CPU, used by tests as an oracle. I/O mirrors
// com.microsoft.GroupQueryAttention (without seqlens_k / total_sequence_length).
#pragma once

#include <cstdint>
#include <optional>

#include "onnxruntime_lite_custom_op.h"

namespace longctx {

struct ReferenceAttentionKernel {
  ReferenceAttentionKernel(const OrtApi* api, const OrtKernelInfo* info);

  // The argument list defines the op schema for the lite API: 3 required float inputs,
  // 2 optional float inputs, 1 required and 2 optional float outputs. `context` is used
  // to allocate the optional outputs (and to learn whether they are wired at all).
  Ort::Status Compute(OrtKernelContext* context,
                      const Ort::Custom::Tensor<float>& query,
                      const Ort::Custom::Tensor<float>& key,
                      const Ort::Custom::Tensor<float>& value,
                      std::optional<const Ort::Custom::Tensor<float>*> past_key,
                      std::optional<const Ort::Custom::Tensor<float>*> past_value,
                      Ort::Custom::Tensor<float>& output,
                      std::optional<Ort::Custom::Tensor<float>*> present_key,
                      std::optional<Ort::Custom::Tensor<float>*> present_value);

  int64_t num_heads_ = 0;
  int64_t kv_num_heads_ = 0;
  float scale_ = 0.0f;            // 0 => 1/sqrt(head_size)
  int64_t causal_ = 1;
  int64_t local_window_size_ = -1;  // <= 0 => no window
};

// Creates the lite custom op "ReferenceAttention" (CPU EP, since version 1). The returned object
// must outlive every session that uses it.
Ort::Custom::OrtLiteCustomOp* CreateReferenceAttentionOp();

}  // namespace longctx
