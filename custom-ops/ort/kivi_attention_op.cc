// KiviAttention (domain "longctx", version 1, CPU EP, float32): attention over a KIVI 2/4-bit KV cache
// (longctx/kivi.h) with the most recent tokens in fp32. A sibling of LongAttention rather than a pattern of it:
// its cache is four extra tensors per layer (codes and params of keys and values) besides the fp32 residual,
// and it computes in float32 only, so it keeps its own schema and file.
//   inputs  0 query [B, S, H*D], 1 key, 2 value [B, S, Hkv*D],
//           3 past_key, 4 past_value: the fp32 residual [B, Hkv, Rp, D] (keys after RoPE),
//           5 seqlens_k [B] int32, 6 total_sequence_length [1] int32 (GQA's; must equal Pq + Rp + S: no padding),
//           7 key_codes uint8 [B, Hkv, Pq, D*bits/8], 8 key_params [B, Hkv, Pq/group, 2, D],
//           9 value_codes uint8 [B, Hkv, Pq, D*bits/8], 10 value_params [B, Hkv, Pq, 2, D/group],
//           11 cos_cache, 12 sin_cache [max_pos, rotary_dim/2] (optional, required with do_rotary)
//   outputs output [B, S, H*D], present_key / present_value [B, Hkv, Rp + S, D] (residual ++ new tokens)
//   attrs   num_heads, kv_num_heads, bits (2 | 4), group (32) required-ish; scale (0 => 1/sqrt(D)), do_rotary,
//           rotary_interleaved
// Folding the residual into the codes is the runtime's (KiviKvCache): the op never rewrites the quantized store.
#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "longctx/kivi.h"
#include "ort_helpers.h"

namespace longctx::ort {
namespace {

constexpr const char* kOp = "longctx.KiviAttention";

struct Executor {
  OrtKernelContext* context;
  static void For(void* self, int64_t n, longctx_task_fn fn, void* ctx) {
    struct Call { longctx_task_fn fn; void* ctx; } call{fn, ctx};
    auto tramp = [](void* u, size_t i) {
      auto* c = static_cast<Call*>(u);
      c->fn(c->ctx, static_cast<int64_t>(i));
    };
    Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(static_cast<Executor*>(self)->context, tramp,
                                                               static_cast<size_t>(n), 0, &call));
  }
};

struct KiviAttentionKernel {
  KiviAttentionKernel(const OrtApi* /*api*/, const OrtKernelInfo* info) {
    num_heads_ = RequiredIntAttr(kOp, info, "num_heads");
    kv_num_heads_ = RequiredIntAttr(kOp, info, "kv_num_heads");
    bits_ = RequiredIntAttr(kOp, info, "bits");
    group_ = OptionalAttr<int64_t>(info, "group", 32);
    scale_ = OptionalAttr<float>(info, "scale", 0.0f);
    do_rotary_ = OptionalAttr<int64_t>(info, "do_rotary", 0) != 0;
    interleaved_ = OptionalAttr<int64_t>(info, "rotary_interleaved", 0) != 0;
    if (num_heads_ <= 0 || kv_num_heads_ <= 0 || num_heads_ % kv_num_heads_ != 0)
      Fail(kOp, "num_heads (" + std::to_string(num_heads_) + ") must be a positive multiple of kv_num_heads (" +
                    std::to_string(kv_num_heads_) + ")");
    if (bits_ != 2 && bits_ != 4) Fail(kOp, "bits " + std::to_string(bits_) + ": KIVI stores 2 or 4 bits");
    if (group_ <= 0) Fail(kOp, "group must be positive, got " + std::to_string(group_));
  }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& query,
                      const Ort::Custom::Tensor<float>& key, const Ort::Custom::Tensor<float>& value,
                      const Ort::Custom::Tensor<float>& past_key, const Ort::Custom::Tensor<float>& past_value,
                      const Ort::Custom::Tensor<int32_t>& seqlens_k, const Ort::Custom::Tensor<int32_t>& total_len,
                      const Ort::Custom::Tensor<uint8_t>& key_codes, const Ort::Custom::Tensor<float>& key_params,
                      const Ort::Custom::Tensor<uint8_t>& value_codes, const Ort::Custom::Tensor<float>& value_params,
                      std::optional<const Ort::Custom::Tensor<float>*> cos_cache,
                      std::optional<const Ort::Custom::Tensor<float>*> sin_cache, Ort::Custom::Tensor<float>& output,
                      Ort::Custom::Tensor<float>& present_key, Ort::Custom::Tensor<float>& present_value) {
    const int64_t H = num_heads_, Hkv = kv_num_heads_;
    const auto& qs = query.Shape();
    ExpectRank(kOp, "query", qs, 3, "[B, S, num_heads*head_dim]");
    const int64_t B = qs[0], S = qs[1], D = qs[2] / H;
    if (qs[2] % H != 0 || D <= 0) Fail(kOp, "query hidden size " + std::to_string(qs[2]) + " is not num_heads x head_dim");
    if (D % 8 != 0 || D % group_ != 0)
      Fail(kOp, "head_dim " + std::to_string(D) + " must be a multiple of 8 and of group " + std::to_string(group_));
    ExpectShape(kOp, "key", key.Shape(), {B, S, Hkv * D});
    ExpectShape(kOp, "value", value.Shape(), {B, S, Hkv * D});
    const auto& ps = past_key.Shape();
    ExpectRank(kOp, "past_key (the fp32 residual)", ps, 4, "[B, kv_num_heads, residual, head_dim]");
    const int64_t Rp = ps[2];
    ExpectShape(kOp, "past_key (the fp32 residual)", ps, {B, Hkv, Rp, D});
    ExpectShape(kOp, "past_value (the fp32 residual)", past_value.Shape(), {B, Hkv, Rp, D});
    const auto& kcs = key_codes.Shape();
    ExpectRank(kOp, "key_codes", kcs, 4, "[B, kv_num_heads, quantized, head_dim*bits/8]");
    const int64_t Pq = kcs[2], rb = D * bits_ / 8;
    if (Pq % group_ != 0)
      Fail(kOp, "key_codes hold " + std::to_string(Pq) + " tokens, not a multiple of group " + std::to_string(group_));
    ExpectShape(kOp, "key_codes", kcs, {B, Hkv, Pq, rb}, "uint8, bits/8 bytes per channel");
    ExpectShape(kOp, "key_params", key_params.Shape(), {B, Hkv, Pq / group_, 2, D}, "scale and zero per channel per group");
    ExpectShape(kOp, "value_codes", value_codes.Shape(), {B, Hkv, Pq, rb}, "uint8, bits/8 bytes per channel");
    ExpectShape(kOp, "value_params", value_params.Shape(), {B, Hkv, Pq, 2, D / group_}, "scale and zero per token per group");
    if (seqlens_k.NumberOfElement() != static_cast<size_t>(B)) Fail(kOp, "seqlens_k must have batch elements");
    const int64_t total = Pq + Rp + S;
    if (total_len.NumberOfElement() != 1 || total_len.Data()[0] != total)
      Fail(kOp, "total_sequence_length must be quantized + residual + new = " + std::to_string(total));
    for (int64_t b = 0; b < B; ++b)
      if (seqlens_k.Data()[b] != total - 1)
        Fail(kOp, "seqlens_k[" + std::to_string(b) + "] = " + std::to_string(seqlens_k.Data()[b]) + ", expected " +
                      std::to_string(total - 1) + " (KiviAttention runs unpadded batches)");
    longctx_kivi_attention_params p{};
    p.batch = B; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D; p.bits = bits_; p.group = group_;
    p.query = query.Data(); p.key = key.Data(); p.value = value.Data();
    p.quant_len = Pq;
    if (Pq > 0) {
      p.key_codes = key_codes.Data(); p.key_params = key_params.Data();
      p.value_codes = value_codes.Data(); p.value_params = value_params.Data();
    }
    p.residual_len = Rp;
    if (Rp > 0) { p.past_key = past_key.Data(); p.past_value = past_value.Data(); }
    p.output = output.Allocate({B, S, H * D});
    p.present_key = present_key.Allocate({B, Hkv, Rp + S, D});
    p.present_value = present_value.Allocate({B, Hkv, Rp + S, D});
    p.do_rotary = do_rotary_;
    p.rotary_interleaved = interleaved_;
    if (do_rotary_) {
      if (!cos_cache.has_value() || !sin_cache.has_value() || *cos_cache == nullptr || *sin_cache == nullptr)
        Fail(kOp, "do_rotary=1 needs cos_cache and sin_cache");
      const auto& cs = (*cos_cache)->Shape();
      ExpectRank(kOp, "cos_cache", cs, 2, "[max_positions, rotary_dim/2]");
      ExpectShape(kOp, "sin_cache", (*sin_cache)->Shape(), cs);
      p.cos_cache = (*cos_cache)->Data(); p.sin_cache = (*sin_cache)->Data();
      p.max_pos = cs[0]; p.rotary_dim = cs[1] * 2;
    }
    p.scale = scale_;
    Executor ex{context};
    p.parallel_for = &Executor::For;
    p.executor = &ex;
    char err[256] = "";
    const longctx_status st = longctx_kivi_attention(&p, err, sizeof err);
    if (st == LONGCTX_INVALID_ARGUMENT) Fail(kOp, err);
    ThrowIfFailed(kOp, "longctx_kivi_attention", st);
    return Ort::Status{nullptr};
  }

  int64_t num_heads_ = 0, kv_num_heads_ = 0, bits_ = 0, group_ = 32;
  float scale_ = 0.0f;
  bool do_rotary_ = false, interleaved_ = false;
};

using LiteOp = Ort::Custom::OrtLiteCustomStruct<KiviAttentionKernel>;

// The lite API's generated compute would dereference an absent optional input (cos/sin without RoPE): this one
// builds the tensors itself (see InputPresent in ort_helpers.h).
OrtStatusPtr DispatchCompute(void* op_kernel, OrtKernelContext* context) noexcept {
  try {
    auto* kernel = reinterpret_cast<LiteOp::Kernel*>(op_kernel);
    for (size_t i = 0; i < 11; ++i)
      if (!InputPresent(context, kernel->num_input_, i)) Fail(kOp, "required input " + std::to_string(i) + " is missing");
    Ort::Custom::Tensor<float> query(context, 0, true), key(context, 1, true), value(context, 2, true);
    Ort::Custom::Tensor<float> past_key(context, 3, true), past_value(context, 4, true);
    Ort::Custom::Tensor<int32_t> seqlens(context, 5, true), total(context, 6, true);
    Ort::Custom::Tensor<uint8_t> key_codes(context, 7, true), value_codes(context, 9, true);
    Ort::Custom::Tensor<float> key_params(context, 8, true), value_params(context, 10, true);
    std::optional<Ort::Custom::Tensor<float>> cos_t, sin_t;
    std::optional<const Ort::Custom::Tensor<float>*> cos, sin;
    if (InputPresent(context, kernel->num_input_, 11)) cos = &cos_t.emplace(context, 11, true);
    if (InputPresent(context, kernel->num_input_, 12)) sin = &sin_t.emplace(context, 12, true);
    Ort::Custom::Tensor<float> output(context, 0, false), present_key(context, 1, false), present_value(context, 2, false);
    return kernel->custom_op_
        ->Compute(context, query, key, value, past_key, past_value, seqlens, total, key_codes, key_params, value_codes,
                  value_params, cos, sin, output, present_key, present_value)
        .release();
  } catch (...) {
    return OrtStatusFromCurrentException(kOp);
  }
}

}  // namespace

Ort::Custom::OrtLiteCustomOp* CreateKiviAttentionOp() {
  Ort::Custom::OrtLiteCustomOp* op =
      Ort::Custom::CreateLiteCustomOp<KiviAttentionKernel>("KiviAttention", "CPUExecutionProvider", 1);
  op->KernelCompute = nullptr;
  op->KernelComputeV2 = &DispatchCompute;
  return op;
}

}  // namespace longctx::ort
