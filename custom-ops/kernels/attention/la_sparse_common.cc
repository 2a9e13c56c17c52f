// Helpers shared by the sparse estimators (la_sparse.h): loading rotated, scaled query rows and key
// rows as float, and building / counting key ranges.
#include "la_sparse.h"
#include "la_tile_loop.h"

namespace longctx::la {

namespace {
template <typename T>
void ToFloat(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  }
}

template <typename T>
void QueryRow(const Plan& plan, int64_t b, int64_t h, int64_t i, float* row) {
  const longctx_la_params& p = *plan.p;
  const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
  const int64_t D = plan.D;
  ToFloat(static_cast<const T*>(p.query) + ((b * p.seq_len + i) * p.num_heads + h) * D, row, D);
  if (p.do_rotary) {
    const int64_t half = plan.R / 2, pos = bi.pattern->query_position(0, bi.past + i);
    std::vector<float> cs(static_cast<size_t>(2 * half));
    ToFloat(static_cast<const T*>(p.cos_cache) + pos * half, cs.data(), half);
    ToFloat(static_cast<const T*>(p.sin_cache) + pos * half, cs.data() + half, half);
    RotateRow(row, plan.R, cs.data(), cs.data() + half, p.rotary_interleaved != 0);
  }
  for (int64_t d = 0; d < D; ++d) row[d] *= bi.scale;
}

template <typename T>
void KeyRows(const Plan& plan, int64_t b, int64_t kvh, int64_t k0, int64_t n, int64_t total, float* dst) {
  const longctx_la_params& p = *plan.p;
  const int64_t D = plan.D;
  const T* base = static_cast<const T*>(p.present_key) + (b * p.kv_num_heads + kvh) * p.present_len * D;
  const int64_t valid = std::max<int64_t>(0, std::min(n, total - k0));
  ToFloat(base + k0 * D, dst, valid * D);
  std::fill(dst + valid * D, dst + n * D, 0.f);
}
}  // namespace

void LoadQueryRow(const Plan& plan, int64_t b, int64_t h, int64_t i, float* row) {
  if (plan.f16) QueryRow<uint16_t>(plan, b, h, i, row); else QueryRow<float>(plan, b, h, i, row);
}

void LoadKeyRows(const Plan& plan, int64_t b, int64_t kvh, int64_t k0, int64_t n, int64_t total, float* dst) {
  if (plan.f16) KeyRows<uint16_t>(plan, b, kvh, k0, n, total, dst); else KeyRows<float>(plan, b, kvh, k0, n, total, dst);
}

void AppendRange(std::vector<int64_t>& ranges, int64_t k0, int64_t k1) {
  if (k1 <= k0) return;
  if (!ranges.empty() && k0 <= ranges.back()) {
    ranges.back() = std::max(ranges.back(), k1);
    return;
  }
  ranges.push_back(k0);
  ranges.push_back(k1);
}

int64_t SelectedPairs(const KeySet& set, int64_t c0, int64_t c1) {
  int64_t n = 0;
  for (size_t r = 0; r + 1 < set.ranges.size(); r += 2) {
    const int64_t k0 = set.ranges[r], k1 = set.ranges[r + 1];
    for (int64_t q = std::max(c0, k0); q < c1; ++q) n += std::min(k1, q + 1) - k0;  // rows q >= k0 see keys
  }
  for (const int64_t k : set.cols) n += std::max<int64_t>(0, c1 - std::max(c0, k));
  return n;
}

}  // namespace longctx::la
