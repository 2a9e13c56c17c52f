// KV quantization entry points (longctx/kvquant.h): argument checks, per-channel scales, and the
// dispatch to the scalar / AVX2 / AVX-512 variant.
//
// Symmetric per-channel int8 ("absmax") quantization: Dettmers et al. 2022, "LLM.int8()", section 3.1
// (vector-wise quantization); per-channel keys as in Liu et al. 2024, "KIVI" (keys quantized per
// channel, values per token: a caller quantizes values per token by passing the transposed view).
#include <cstddef>
#include <new>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/guard.h"
#include "kvquant/kvquant_kernels.h"
#include "longctx/kvquant.h"

namespace {

namespace kq = longctx::kvquant;

constexpr longctx::dispatch::ByIsa<kq::Table> kTables = {&kq::kScalar, &kq::kAvx2, &kq::kAvx512};

bool BadShape(int64_t tokens, int64_t channels) { return tokens < 0 || channels < 0; }
bool Empty(int64_t tokens, int64_t channels) { return tokens == 0 || channels == 0; }

using longctx::Guard;

}  // namespace

extern "C" longctx_status longctx_kv_absmax(const longctx_kv_absmax_params* p) {
  if (p == nullptr || BadShape(p->tokens, p->channels)) return LONGCTX_INVALID_ARGUMENT;
  if (p->channels > 0 && p->absmax == nullptr) return LONGCTX_INVALID_ARGUMENT;
  if (p->tokens > 0 && p->channels > 0 && (p->x == nullptr || p->x_token_stride < p->channels)) {
    return LONGCTX_INVALID_ARGUMENT;
  }
  const kq::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  if (p->channels == 0) return LONGCTX_OK;
  if (p->tokens == 0) {
    for (int64_t c = 0; c < p->channels; ++c) p->absmax[c] = 0.0f;
    return LONGCTX_OK;
  }
  t->absmax(p->x, p->tokens, p->channels, p->x_token_stride, p->absmax);
  return LONGCTX_OK;
}

extern "C" longctx_status longctx_kv_quantize_int8(const longctx_kv_quantize_params* p) {
  if (p == nullptr || BadShape(p->tokens, p->channels)) return LONGCTX_INVALID_ARGUMENT;
  if (p->channels > 0 && p->scales == nullptr) return LONGCTX_INVALID_ARGUMENT;
  if (!Empty(p->tokens, p->channels) && (p->x == nullptr || p->q == nullptr || p->x_token_stride < p->channels ||
                                         p->q_token_stride < p->channels)) {
    return LONGCTX_INVALID_ARGUMENT;
  }
  const kq::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  if (p->channels == 0) return LONGCTX_OK;
  return Guard([&] {
    const int64_t C = p->channels;
    if (p->tokens == 0) {
      for (int64_t c = 0; c < C; ++c) p->scales[c] = 0.0f;
      return LONGCTX_OK;
    }
    t->absmax(p->x, p->tokens, C, p->x_token_stride, p->scales);  // absmax first, into the scales buffer
    std::vector<float> inv(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      const float m = p->scales[c];
      inv[c] = m > 0.0f ? 127.0f / m : 0.0f;
      p->scales[c] = m / 127.0f;
    }
    t->quantize(p->x, p->tokens, C, p->x_token_stride, inv.data(), p->q, p->q_token_stride);
    return LONGCTX_OK;
  });
}

extern "C" longctx_status longctx_kv_dequantize_int8(const longctx_kv_dequantize_params* p) {
  if (p == nullptr || BadShape(p->tokens, p->channels)) return LONGCTX_INVALID_ARGUMENT;
  if (!Empty(p->tokens, p->channels) && (p->q == nullptr || p->scales == nullptr || p->y == nullptr ||
                                         p->q_token_stride < p->channels || p->y_token_stride < p->channels)) {
    return LONGCTX_INVALID_ARGUMENT;
  }
  const kq::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  if (Empty(p->tokens, p->channels)) return LONGCTX_OK;
  t->dequantize(p->q, p->tokens, p->channels, p->q_token_stride, p->scales, p->y, p->y_token_stride);
  return LONGCTX_OK;
}
