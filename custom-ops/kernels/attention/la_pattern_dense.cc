// LongAttention pattern "dense": causal attention over every cached key.
//   allowed(q, k) = k <= q;  RoPE position of query and key = its cache index.
// Keys are rotated once when appended and cached rotated, exactly like
// com.microsoft.GroupQueryAttention (do_rotary=1), so a dense cache is interchangeable with GQA's.
#include "la_internal.h"

namespace longctx::la {
namespace {

class Dense final : public Pattern {
 public:
  int num_variants() const override { return 1; }
  bool keys_prerotated() const override { return true; }
  int64_t query_position(int, int64_t q) const override { return q; }
  int64_t key_position(int64_t k) const override { return k; }
  int64_t max_position(int64_t total) const override { return total - 1; }
  int spans(int64_t, int64_t q1, Span out[3]) const override {
    out[0] = Span{0, q1, 0};
    return 1;
  }
  TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    if (k0 > q1 - 1) return TileKind::Empty;
    if (k1 - 1 <= q0) return TileKind::Full;
    return TileKind::Partial;
  }
  bool allowed(int64_t q, int64_t k) const override { return k <= q; }
  void mask_row(int64_t q, int64_t k0, int64_t n, float* s) const override {
    for (int64_t j = std::max<int64_t>(0, q - k0 + 1); j < n; ++j) s[j] = -INFINITY;  // k0 + j > q
  }
};

}  // namespace

std::unique_ptr<Pattern> MakeDense() { return std::make_unique<Dense>(); }

}  // namespace longctx::la
