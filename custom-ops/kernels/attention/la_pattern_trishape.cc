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

class Trishape final : public Pattern {
 public:
  Trishape(int64_t sink, int64_t window, int64_t dense_from) : sink_(sink), window_(window), dense_from_(dense_from) {}
  int num_variants() const override { return 1; }
  bool keys_prerotated() const override { return true; }
  int64_t query_position(int, int64_t q) const override { return q; }
  int64_t key_position(int64_t k) const override { return k; }
  int64_t max_position(int64_t total) const override { return total - 1; }
  int spans(int64_t q0, int64_t q1, Span out[3]) const override {
    if (q1 - 1 >= dense_from_) {  // some row of the tile is dense
      out[0] = Span{0, q1, 0};
      return 1;
    }
    int n = 0;
    const int64_t sink_end = std::min(sink_, q1);
    if (sink_end > 0) out[n++] = Span{0, sink_end, 0};
    const int64_t win_begin = std::max(sink_end, q0 - window_ + 1);
    if (win_begin < q1) out[n++] = Span{win_begin, q1, 0};
    return n;
  }
  TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    if (k0 > q1 - 1) return TileKind::Empty;
    const bool all_dense = q0 >= dense_from_;
    if (!all_dense && q1 - 1 < dense_from_ && k0 >= sink_ && k1 - 1 <= q0 - window_) return TileKind::Empty;
    if (k1 - 1 <= q0 && (all_dense || k1 - 1 < sink_ || k0 > q1 - 1 - window_)) return TileKind::Full;
    return TileKind::Partial;
  }
  bool allowed(int64_t q, int64_t k) const override {
    return k <= q && (k < sink_ || k > q - window_ || q >= dense_from_);
  }

 private:
  int64_t sink_, window_, dense_from_;
};

}  // namespace

std::unique_ptr<Pattern> MakeTrishape(int64_t sink, int64_t window, int64_t last, int64_t total, std::string* err) {
  if (sink < 0 || window < 1 || last < 0) {
    *err = "trishape needs sink >= 0, window >= 1 and last >= 0 (got sink=" + std::to_string(sink) +
           ", window=" + std::to_string(window) + ", last=" + std::to_string(last) + ")";
    return nullptr;
  }
  return std::make_unique<Trishape>(sink, window, total - last);
}

}  // namespace longctx::la
