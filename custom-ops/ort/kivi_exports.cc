// Test exports of the KIVI codec (longctx/kivi.h), for the C# tests that check the runtime's KiviCodec against the
// native codes bit for bit: LongCtxKiviQuantize / LongCtxKiviDequantize over one [tokens, head_dim] block, keys (per
// channel) when `keys` is non-zero, else values (per token). Return the longctx_status.
#include <cstdint>

#include "longctx/kivi.h"

#define LONGCTX_EXPORT __attribute__((visibility("default")))

extern "C" LONGCTX_EXPORT int LongCtxKiviQuantize(int keys, int64_t bits, int64_t group, int64_t tokens, int64_t head_dim,
                                                  const float* x, uint8_t* codes, float* qparams) {
  longctx_kivi_quant_params p{bits, group, tokens, head_dim, x, head_dim, codes, qparams, nullptr, 0};
  return keys ? longctx_kivi_quantize_keys(&p) : longctx_kivi_quantize_values(&p);
}

extern "C" LONGCTX_EXPORT int LongCtxKiviDequantize(int keys, int64_t bits, int64_t group, int64_t tokens,
                                                    int64_t head_dim, const uint8_t* codes, const float* qparams, float* y) {
  longctx_kivi_quant_params p{bits, group, tokens, head_dim, nullptr, 0, const_cast<uint8_t*>(codes),
                              const_cast<float*>(qparams), y, head_dim};
  return keys ? longctx_kivi_dequantize_keys(&p) : longctx_kivi_dequantize_values(&p);
}
