#include "reference_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace longctx {
namespace {

constexpr const char* kOp = "longctx.ReferenceAttention";

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

[[noreturn]] void Fail(const std::string& msg) {
  throw Ort::Exception(std::string(kOp) + ": " + msg, ORT_INVALID_ARGUMENT);
}

// Reads an optional attribute; returns `fallback` when it is absent.
template <typename T>
T OptionalAttr(const OrtKernelInfo* info, const char* name, T fallback) {
  T v{};
  OrtStatus* st;
  if constexpr (std::is_same_v<T, float>) {
    st = Ort::GetApi().KernelInfoGetAttribute_float(info, name, &v);
  } else {
    st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  }
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return fallback;
  }
  return v;
}

int64_t RequiredIntAttr(const OrtKernelInfo* info, const char* name) {
  int64_t v = 0;
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    Fail(std::string("required int attribute '") + name + "' is missing");
  }
  return v;
}

// Allocates output `index`; returns nullptr when the node leaves that optional output unwired.
float* AllocateOptionalOutput(OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) {
  OrtValue* value = nullptr;
  Ort::ThrowOnError(Ort::GetApi().KernelContext_GetOutput(context, index, shape.data(), shape.size(), &value));
  if (value == nullptr) return nullptr;
  float* data = nullptr;
  Ort::ThrowOnError(Ort::GetApi().GetTensorMutableData(value, reinterpret_cast<void**>(&data)));
  return data;
}

using LiteOp = Ort::Custom::OrtLiteCustomStruct<ReferenceAttentionKernel>;

// Replacement for the lite API's generated KernelComputeV2. In ORT 1.31 the generated code only
// checks `index < input count` for std::optional inputs, so an optional input given as an empty
// name ("") reaches Ort::Custom::Tensor's constructor as a null OrtValue and crashes. This
// dispatcher materialises the same arguments but treats null inputs/outputs as absent.
OrtStatusPtr DispatchCompute(void* op_kernel, OrtKernelContext* context) noexcept {
  try {
    auto* kernel = reinterpret_cast<LiteOp::Kernel*>(op_kernel);
    const OrtApi& api = Ort::GetApi();
    auto input_present = [&](size_t i) {
      if (i >= kernel->num_input_) return false;
      const OrtValue* v = nullptr;
      Ort::ThrowOnError(api.KernelContext_GetInput(context, i, &v));
      return v != nullptr;
    };
    for (size_t i = 0; i < 3; ++i) {
      if (!input_present(i)) Fail("required input " + std::to_string(i) + " (query/key/value) is missing");
    }
    Ort::Custom::Tensor<float> query(context, 0, true), key(context, 1, true), value(context, 2, true);
    std::optional<Ort::Custom::Tensor<float>> past_key_t, past_value_t;
    std::optional<const Ort::Custom::Tensor<float>*> past_key, past_value;
    if (input_present(3)) past_key = &past_key_t.emplace(context, 3, true);
    if (input_present(4)) past_value = &past_value_t.emplace(context, 4, true);

    Ort::Custom::Tensor<float> output(context, 0, false);
    std::optional<Ort::Custom::Tensor<float>> present_key_t, present_value_t;
    std::optional<Ort::Custom::Tensor<float>*> present_key, present_value;
    if (kernel->num_output_ > 1) present_key = &present_key_t.emplace(context, 1, false);
    if (kernel->num_output_ > 2) present_value = &present_value_t.emplace(context, 2, false);

    return kernel->custom_op_
        ->Compute(context, query, key, value, past_key, past_value, output, present_key, present_value)
        .release();
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(kOp) + ": " + e.what()).c_str());
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

ReferenceAttentionKernel::ReferenceAttentionKernel(const OrtApi* /*api*/, const OrtKernelInfo* info) {
  num_heads_ = RequiredIntAttr(info, "num_heads");
  kv_num_heads_ = RequiredIntAttr(info, "kv_num_heads");
  scale_ = OptionalAttr<float>(info, "scale", 0.0f);
  causal_ = OptionalAttr<int64_t>(info, "causal", 1);
  local_window_size_ = OptionalAttr<int64_t>(info, "local_window_size", -1);
  if (num_heads_ <= 0 || kv_num_heads_ <= 0) {
    Fail("num_heads (" + std::to_string(num_heads_) + ") and kv_num_heads (" + std::to_string(kv_num_heads_) +
         ") must be positive");
  }
  if (num_heads_ % kv_num_heads_ != 0) {
    Fail("num_heads (" + std::to_string(num_heads_) + ") must be a multiple of kv_num_heads (" +
         std::to_string(kv_num_heads_) + ")");
  }
}

Ort::Status ReferenceAttentionKernel::Compute(OrtKernelContext* context,
                                              const Ort::Custom::Tensor<float>& query,
                                              const Ort::Custom::Tensor<float>& key,
                                              const Ort::Custom::Tensor<float>& value,
                                              std::optional<const Ort::Custom::Tensor<float>*> past_key,
                                              std::optional<const Ort::Custom::Tensor<float>*> past_value,
                                              Ort::Custom::Tensor<float>& output,
                                              std::optional<Ort::Custom::Tensor<float>*> present_key,
                                              std::optional<Ort::Custom::Tensor<float>*> present_value) {
  try {
    const int64_t Hq = num_heads_, Hkv = kv_num_heads_;

    const auto& qs = query.Shape();
    const auto& ks = key.Shape();
    const auto& vs = value.Shape();
    if (qs.size() != 3) Fail("query must be rank 3 [B, S, num_heads*head_size], got " + ShapeStr(qs));
    if (ks.size() != 3) Fail("key must be rank 3 [B, S, kv_num_heads*head_size], got " + ShapeStr(ks));
    if (vs.size() != 3) Fail("value must be rank 3 [B, S, kv_num_heads*head_size], got " + ShapeStr(vs));
    const int64_t B = qs[0], S = qs[1];
    if (qs[2] % Hq != 0) {
      Fail("query hidden size " + std::to_string(qs[2]) + " is not divisible by num_heads " + std::to_string(Hq) +
           " (query shape " + ShapeStr(qs) + ")");
    }
    const int64_t D = qs[2] / Hq;
    if (D <= 0) Fail("head_size must be positive, query shape " + ShapeStr(qs));
    const std::vector<int64_t> kv_expected{B, S, Hkv * D};
    if (ks != kv_expected) {
      Fail("key shape " + ShapeStr(ks) + " does not match expected " + ShapeStr(kv_expected) +
           " (B, S from query; kv_num_heads*head_size with head_size " + std::to_string(D) + ")");
    }
    if (vs != kv_expected) {
      Fail("value shape " + ShapeStr(vs) + " does not match expected " + ShapeStr(kv_expected));
    }

    const bool has_pk = past_key.has_value() && *past_key != nullptr;
    const bool has_pv = past_value.has_value() && *past_value != nullptr;
    if (has_pk != has_pv) Fail("past_key and past_value must be given together");
    int64_t P = 0;
    const float* pk = nullptr;
    const float* pv = nullptr;
    if (has_pk) {
      const auto& pks = (*past_key)->Shape();
      const auto& pvs = (*past_value)->Shape();
      if (pks.size() != 4) Fail("past_key must be rank 4 [B, kv_num_heads, P, head_size], got " + ShapeStr(pks));
      P = pks[2];
      const std::vector<int64_t> past_expected{B, Hkv, P, D};
      if (pks != past_expected) {
        Fail("past_key shape " + ShapeStr(pks) + " does not match expected " + ShapeStr(past_expected));
      }
      if (pvs != past_expected) {
        Fail("past_value shape " + ShapeStr(pvs) + " does not match expected " + ShapeStr(past_expected));
      }
      if (P > 0) {
        pk = (*past_key)->Data();
        pv = (*past_value)->Data();
      }
    }
    const int64_t T = P + S;

    float* out = output.Allocate({B, S, Hq * D});
    // present_key / present_value are optional outputs; when a node does not wire them the
    // concatenated cache is still needed for the attention itself, so use scratch memory.
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
    const float* q = query.Data();
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

    const double scale = scale_ != 0.0f ? static_cast<double>(scale_) : 1.0 / std::sqrt(static_cast<double>(D));
    const int64_t group = Hq / Hkv;
    std::vector<double> scores(static_cast<size_t>(T));
    std::vector<double> acc(static_cast<size_t>(D));

    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t kvh = h / group;
        const float* K = prk + ((b * Hkv + kvh) * T) * D;
        const float* V = prv + ((b * Hkv + kvh) * T) * D;
        for (int64_t i = 0; i < S; ++i) {
          const int64_t p = P + i;  // absolute position of this query
          const int64_t hi = causal_ ? p : T - 1;
          // Same convention as com.microsoft.GroupQueryAttention (checked against
          // ORT 1.31 CPU): keys in (p - local_window_size, p], i.e. the current
          // token and the local_window_size - 1 tokens before it. With causal=0
          // the window only bounds from below.
          const int64_t lo = local_window_size_ > 0 ? std::max<int64_t>(0, p - local_window_size_ + 1) : 0;
          const float* Q = q + ((b * S + i) * Hq + h) * D;

          double mx = -INFINITY;
          for (int64_t j = lo; j <= hi; ++j) {
            double dot = 0.0;
            for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(Q[d]) * static_cast<double>(K[j * D + d]);
            scores[j] = dot * scale;
            mx = std::max(mx, scores[j]);
          }
          double sum = 0.0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t j = lo; j <= hi; ++j) {
            const double w = std::exp(scores[j] - mx);
            sum += w;
            for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<double>(V[j * D + d]);
          }
          float* O = out + ((b * S + i) * Hq + h) * D;
          for (int64_t d = 0; d < D; ++d) O[d] = static_cast<float>(acc[d] / sum);
        }
      }
    }
    return Ort::Status{nullptr};
  } catch (const Ort::Exception& e) {
    return Ort::Status{e.what(), e.GetOrtErrorCode()};
  } catch (const std::exception& e) {
    return Ort::Status{(std::string(kOp) + ": " + e.what()).c_str(), ORT_RUNTIME_EXCEPTION};
  }
}

}  // namespace longctx
