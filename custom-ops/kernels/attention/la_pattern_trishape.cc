// LongAttention pattern "trishape": SCBench (Li et al. 2024, "SCBench: A KV Cache-Centric Analysis of
// Long-Context Methods", arXiv 2412.10319, section 4 "Tri-shape"): the A-shape of StreamingLLM (attention
// sinks + a local band) for most query rows, plus DENSE attention for the last `last` rows of the prompt
// (the question at its end sees the whole context). For a call whose query rows have cache indices
// [total - S, total):
//   allowed(q, k) = k <= q  and  (k < sink  or  q - window < k  or  q >= total - last)
// Keys are cached rotated with their cache index, as for dense, so decode over the same cache is dense.
#include "la_internal.h"

namespace longctx::la {
namespace {

// Rows before dense_from behave as StreamingLLM's sink + window (the streaming pattern, composed), rows from it densely.
class Trishape final : public Pattern {
 public:
  Trishape(std::unique_ptr<Pattern> ashape, int64_t sink, int64_t dense_from)
      : ashape_(std::move(ashape)), sink_(sink), dense_from_(dense_from) {}
  int num_variants() const override { return 1; }
  bool keys_prerotated() const override { return true; }
  int64_t query_position(int, int64_t q) const override { return q; }
  int64_t key_position(int64_t k) const override { return k; }
  int64_t max_position(int64_t total) const override { return total - 1; }
  int spans(int64_t q0, int64_t q1, Span out[3]) const override {
    if (q1 - 1 < dense_from_) return ashape_->spans(q0, q1, out);
    out[0] = Span{0, q1, 0};  // some row of the tile is dense
    return 1;
  }
  TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    if (q1 - 1 < dense_from_) return ashape_->classify(q0, q1, k0, k1);
    if (k0 > q1 - 1) return TileKind::Empty;
    if (k1 - 1 <= q0 && (q0 >= dense_from_ || k1 - 1 < sink_)) return TileKind::Full;
    return TileKind::Partial;
  }
  bool allowed(int64_t q, int64_t k) const override { return q >= dense_from_ ? k <= q : ashape_->allowed(q, k); }

 private:
  std::unique_ptr<Pattern> ashape_;
  int64_t sink_, dense_from_;
};

}  // namespace

std::unique_ptr<Pattern> MakeTrishape(int64_t sink, int64_t window, int64_t last, int64_t total, std::string* err) {
  if (sink < 0 || window < 1 || last < 0) {
    *err = "trishape needs sink >= 0, window >= 1 and last >= 0 (got sink=" + std::to_string(sink) +
           ", window=" + std::to_string(window) + ", last=" + std::to_string(last) + ")";
    return nullptr;
  }
  std::unique_ptr<Pattern> ashape = MakeStreaming(sink, window, err);
  if (!ashape) return nullptr;
  return std::make_unique<Trishape>(std::move(ashape), sink, total - last);
}

}  // namespace longctx::la
