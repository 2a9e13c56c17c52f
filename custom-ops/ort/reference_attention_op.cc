// ReferenceAttention (domain "longctx", version 1, CPU EP): exact scaled-dot-product attention, used
// by tests as an oracle. I/O mirrors com.microsoft.GroupQueryAttention without seqlens_k /
// total_sequence_length:
//   inputs  query [B, S, num_heads*D], key / value [B, S, kv_num_heads*D],
//           past_key / past_value [B, kv_num_heads, P, D] (optional, together)
//   outputs output [B, S, num_heads*D], present_key / present_value [B, kv_num_heads, P+S, D] (optional)
//   attrs   num_heads, kv_num_heads (required); scale (0 => 1/sqrt(D)), causal (1),
//           local_window_size (-1 => none)
// The wrapper checks shapes, builds present = concat(past, new) and calls the ORT-free kernel
// longctx_attention_reference (kernels/attention/attention_reference.cc) with strides.
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "longctx/attention_reference.h"
#include "ort_helpers.h"

namespace longctx::ort {
namespace {

constexpr const char* kOp = "longctx.ReferenceAttention";

struct ReferenceAttentionKernel {
  ReferenceAttentionKernel(const OrtApi* /*api*/, const OrtKernelInfo* info) {
    num_heads_ = RequiredIntAttr(kOp, info, "num_heads");
    kv_num_heads_ = RequiredIntAttr(kOp, info, "kv_num_heads");
    scale_ = OptionalAttr<float>(info, "scale", 0.0f);
    causal_ = OptionalAttr<int64_t>(info, "causal", 1);
    local_window_size_ = OptionalAttr<int64_t>(info, "local_window_size", -1);
    if (num_heads_ <= 0 || kv_num_heads_ <= 0) {
      Fail(kOp, "num_heads (" + std::to_string(num_heads_) + ") and kv_num_heads (" + std::to_string(kv_num_heads_) +
                    ") must be positive");
    }
    if (num_heads_ % kv_num_heads_ != 0) {
      Fail(kOp, "num_heads (" + std::to_string(num_heads_) + ") must be a multiple of kv_num_heads (" +
                    std::to_string(kv_num_heads_) + ")");
    }
  }

  // The argument list defines the op schema for the lite API: 3 required float inputs, 2 optional
  // float inputs, 1 required and 2 optional float outputs. `context` allocates the optional outputs
  // (and tells whether they are wired at all).
  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& query,
                      const Ort::Custom::Tensor<float>& key, const Ort::Custom::Tensor<float>& value,
                      std::optional<const Ort::Custom::Tensor<float>*> past_key,
                      std::optional<const Ort::Custom::Tensor<float>*> past_value, Ort::Custom::Tensor<float>& output,
                      std::optional<Ort::Custom::Tensor<float>*> present_key,
                      std::optional<Ort::Custom::Tensor<float>*> present_value);

  int64_t num_heads_ = 0;
  int64_t kv_num_heads_ = 0;
  float scale_ = 0.0f;              // 0 => 1/sqrt(head_size)
  int64_t causal_ = 1;
  int64_t local_window_size_ = -1;  // <= 0 => no window
};

Ort::Status ReferenceAttentionKernel::Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& query,
                                              const Ort::Custom::Tensor<float>& key,
                                              const Ort::Custom::Tensor<float>& value,
                                              std::optional<const Ort::Custom::Tensor<float>*> past_key,
                                              std::optional<const Ort::Custom::Tensor<float>*> past_value,
                                              Ort::Custom::Tensor<float>& output,
                                              std::optional<Ort::Custom::Tensor<float>*> present_key,
                                              std::optional<Ort::Custom::Tensor<float>*> present_value) {
  const int64_t Hq = num_heads_, Hkv = kv_num_heads_;
  const auto& qs = query.Shape();
  const auto& ks = key.Shape();
  const auto& vs = value.Shape();
  ExpectRank(kOp, "query", qs, 3, "[B, S, num_heads*head_size]");
  ExpectRank(kOp, "key", ks, 3, "[B, S, kv_num_heads*head_size]");
  ExpectRank(kOp, "value", vs, 3, "[B, S, kv_num_heads*head_size]");
  const int64_t B = qs[0], S = qs[1];
  if (qs[2] % Hq != 0) {
    Fail(kOp, "query hidden size " + std::to_string(qs[2]) + " is not divisible by num_heads " + std::to_string(Hq) +
                  " (query shape " + ShapeStr(qs) + ")");
  }
  const int64_t D = qs[2] / Hq;
  if (D <= 0) Fail(kOp, "head_size must be positive, query shape " + ShapeStr(qs));
  const std::vector<int64_t> kv_expected{B, S, Hkv * D};
  ExpectShape(kOp, "key", ks, kv_expected,
              "B, S from query; kv_num_heads*head_size with head_size " + std::to_string(D));
  ExpectShape(kOp, "value", vs, kv_expected);

  const bool has_pk = past_key.has_value() && *past_key != nullptr;
  const bool has_pv = past_value.has_value() && *past_value != nullptr;
  if (has_pk != has_pv) Fail(kOp, "past_key and past_value must be given together");
  int64_t P = 0;
  const float* pk = nullptr;
  const float* pv = nullptr;
  if (has_pk) {
    const auto& pks = (*past_key)->Shape();
    ExpectRank(kOp, "past_key", pks, 4, "[B, kv_num_heads, P, head_size]");
    P = pks[2];
    const std::vector<int64_t> past_expected{B, Hkv, P, D};
    ExpectShape(kOp, "past_key", pks, past_expected);
    ExpectShape(kOp, "past_value", (*past_value)->Shape(), past_expected);
    if (P > 0) {
      pk = (*past_key)->Data();
      pv = (*past_value)->Data();
    }
  }
  const int64_t T = P + S;

  float* out = output.Allocate({B, S, Hq * D});
  // present_key / present_value are optional outputs; when a node does not wire them the concatenated
  // cache is still needed for the attention itself, so use scratch memory.
  const std::vector<int64_t> present_shape{B, Hkv, T, D};
  std::vector<float> scratch_k, scratch_v;
  float* prk = present_key.has_value() ? AllocateOptionalOutput(context, 1, present_shape) : nullptr;
  float* prv = present_value.has_value() ? AllocateOptionalOutput(context, 2, present_shape) : nullptr;
  if (prk == nullptr) {
    scratch_k.resize(static_cast<size_t>(B * Hkv * T * D));
    prk = scratch_k.data();
  }
  if (prv == nullptr) {
    scratch_v.resize(static_cast<size_t>(B * Hkv * T * D));
    prv = scratch_v.data();
  }
  const float* k = key.Data();
  const float* v = value.Data();

  // present = concat(past, new) along the sequence axis, layout [B, Hkv, T, D].
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hkv; ++h) {
      float* dk = prk + ((b * Hkv + h) * T) * D;
      float* dv = prv + ((b * Hkv + h) * T) * D;
      if (P > 0) {
        std::memcpy(dk, pk + ((b * Hkv + h) * P) * D, sizeof(float) * P * D);
        std::memcpy(dv, pv + ((b * Hkv + h) * P) * D, sizeof(float) * P * D);
      }
      for (int64_t s = 0; s < S; ++s) {
        std::memcpy(dk + (P + s) * D, k + ((b * S + s) * Hkv + h) * D, sizeof(float) * D);
        std::memcpy(dv + (P + s) * D, v + ((b * S + s) * Hkv + h) * D, sizeof(float) * D);
      }
    }
  }

  longctx_attention_reference_params p{};
  p.batch = B;
  p.q_heads = Hq;
  p.kv_heads = Hkv;
  p.q_len = S;
  p.kv_len = T;
  p.head_dim = D;
  p.q_offset = P;
  p.scale = scale_;
  p.causal = causal_ != 0;
  p.local_window = local_window_size_;
  // query / output [B, S, Hq*D]: batch S*Hq*D, head D, token Hq*D
  p.q = query.Data();
  p.q_stride_b = S * Hq * D, p.q_stride_h = D, p.q_stride_s = Hq * D;
  p.out = out;
  p.out_stride_b = S * Hq * D, p.out_stride_h = D, p.out_stride_s = Hq * D;
  // present [B, Hkv, T, D]
  p.k = prk;
  p.k_stride_b = Hkv * T * D, p.k_stride_h = T * D, p.k_stride_s = D;
  p.v = prv;
  p.v_stride_b = Hkv * T * D, p.v_stride_h = T * D, p.v_stride_s = D;
  ThrowIfFailed(kOp, "longctx_attention_reference", longctx_attention_reference(&p));
  return Ort::Status{nullptr};
}

using LiteOp = Ort::Custom::OrtLiteCustomStruct<ReferenceAttentionKernel>;

// Replacement for the lite API's generated KernelComputeV2: it materialises the same arguments but
// treats null (empty-name) optional inputs as absent (see InputPresent).
OrtStatusPtr DispatchCompute(void* op_kernel, OrtKernelContext* context) noexcept {
  try {
    auto* kernel = reinterpret_cast<LiteOp::Kernel*>(op_kernel);
    for (size_t i = 0; i < 3; ++i) {
      if (!InputPresent(context, kernel->num_input_, i)) {
        Fail(kOp, "required input " + std::to_string(i) + " (query/key/value) is missing");
      }
    }
    Ort::Custom::Tensor<float> query(context, 0, true), key(context, 1, true), value(context, 2, true);
    std::optional<Ort::Custom::Tensor<float>> past_key_t, past_value_t;
    std::optional<const Ort::Custom::Tensor<float>*> past_key, past_value;
    if (InputPresent(context, kernel->num_input_, 3)) past_key = &past_key_t.emplace(context, 3, true);
    if (InputPresent(context, kernel->num_input_, 4)) past_value = &past_value_t.emplace(context, 4, true);

    Ort::Custom::Tensor<float> output(context, 0, false);
    std::optional<Ort::Custom::Tensor<float>> present_key_t, present_value_t;
    std::optional<Ort::Custom::Tensor<float>*> present_key, present_value;
    if (kernel->num_output_ > 1) present_key = &present_key_t.emplace(context, 1, false);
    if (kernel->num_output_ > 2) present_value = &present_value_t.emplace(context, 2, false);

    return kernel->custom_op_
        ->Compute(context, query, key, value, past_key, past_value, output, present_key, present_value)
        .release();
  } catch (...) {
    return OrtStatusFromCurrentException(kOp);
  }
}

}  // namespace

Ort::Custom::OrtLiteCustomOp* CreateReferenceAttentionOp() {
  Ort::Custom::OrtLiteCustomOp* op =
      Ort::Custom::CreateLiteCustomOp<ReferenceAttentionKernel>("ReferenceAttention", "CPUExecutionProvider", 1);
  op->KernelCompute = nullptr;
  op->KernelComputeV2 = &DispatchCompute;
  return op;
}

}  // namespace longctx::ort
