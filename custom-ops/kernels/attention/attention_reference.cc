// Reference attention (longctx/attention_reference.h): the oracle.
//
// Formula: Vaswani et al. 2017, "Attention Is All You Need", eq. 1, softmax(Q K^T * scale) V, with
// the max-subtracted softmax; GQA grouping (Ainslie et al. 2023, "GQA") maps query head h to KV head
// h / (q_heads / kv_heads); the local-window and causal conventions are those of
// com.microsoft.GroupQueryAttention (checked against ORT 1.31 CPU by tests/CustomOps).
// Moved out of the ORT op (ort/reference_attention_op.cc) so every kernel can be tested against it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <vector>

#include "longctx/attention_reference.h"

namespace {

bool ValidStrides(int64_t b, int64_t h, int64_t s) { return b >= 0 && h >= 0 && s >= 0; }

longctx_status Run(const longctx_attention_reference_params& p) {
  const int64_t B = p.batch, Hq = p.q_heads, Hkv = p.kv_heads, S = p.q_len, T = p.kv_len, D = p.head_dim;
  if (B <= 0 || Hq <= 0 || Hkv <= 0 || D <= 0 || S < 0 || T < 0 || p.q_offset < 0) return LONGCTX_INVALID_ARGUMENT;
  if (Hq % Hkv != 0) return LONGCTX_INVALID_ARGUMENT;
  if (!ValidStrides(p.q_stride_b, p.q_stride_h, p.q_stride_s) || !ValidStrides(p.k_stride_b, p.k_stride_h, p.k_stride_s) ||
      !ValidStrides(p.v_stride_b, p.v_stride_h, p.v_stride_s) ||
      !ValidStrides(p.out_stride_b, p.out_stride_h, p.out_stride_s) || p.lse_stride_b < 0 || p.lse_stride_h < 0) {
    return LONGCTX_INVALID_ARGUMENT;
  }
  if (S == 0) return LONGCTX_OK;
  if (p.q == nullptr || p.out == nullptr || (T > 0 && (p.k == nullptr || p.v == nullptr))) {
    return LONGCTX_INVALID_ARGUMENT;
  }

  const double scale = p.scale != 0.0f ? static_cast<double>(p.scale) : 1.0 / std::sqrt(static_cast<double>(D));
  const int64_t group = Hq / Hkv;
  std::vector<double> scores(static_cast<size_t>(T));
  std::vector<double> acc(static_cast<size_t>(D));

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / group;
      const float* K = p.k + b * p.k_stride_b + kvh * p.k_stride_h;
      const float* V = p.v + b * p.v_stride_b + kvh * p.v_stride_h;
      for (int64_t i = 0; i < S; ++i) {
        const int64_t pos = p.q_offset + i;  // absolute position of this query
        const int64_t hi = p.causal ? std::min(pos, T - 1) : T - 1;
        const int64_t lo = p.local_window > 0 ? std::max<int64_t>(0, pos - p.local_window + 1) : 0;
        const float* Q = p.q + b * p.q_stride_b + h * p.q_stride_h + i * p.q_stride_s;
        float* O = p.out + b * p.out_stride_b + h * p.out_stride_h + i * p.out_stride_s;
        float* L = p.lse != nullptr ? p.lse + b * p.lse_stride_b + h * p.lse_stride_h + i : nullptr;

        if (lo > hi) {  // no visible key
          std::fill(O, O + D, 0.0f);
          if (L != nullptr) *L = -std::numeric_limits<float>::infinity();
          continue;
        }
        double mx = -INFINITY;
        for (int64_t j = lo; j <= hi; ++j) {
          const float* Kj = K + j * p.k_stride_s;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(Q[d]) * static_cast<double>(Kj[d]);
          scores[j] = dot * scale;
          mx = std::max(mx, scores[j]);
        }
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = lo; j <= hi; ++j) {
          const double w = std::exp(scores[j] - mx);
          const float* Vj = V + j * p.v_stride_s;
          sum += w;
          for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<double>(Vj[d]);
        }
        for (int64_t d = 0; d < D; ++d) O[d] = static_cast<float>(acc[d] / sum);
        if (L != nullptr) *L = static_cast<float>(mx + std::log(sum));
      }
    }
  }
  return LONGCTX_OK;
}

}  // namespace

extern "C" longctx_status longctx_attention_reference(const longctx_attention_reference_params* params) {
  if (params == nullptr) return LONGCTX_INVALID_ARGUMENT;
  try {
    return Run(*params);
  } catch (const std::bad_alloc&) {
    return LONGCTX_OUT_OF_MEMORY;
  } catch (...) {
    return LONGCTX_INTERNAL;
  }
}
