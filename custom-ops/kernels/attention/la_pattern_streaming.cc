// LongAttention pattern "streaming": StreamingLLM, Xiao et al. 2023, "Efficient Streaming Language
// Models with Attention Sinks" (arXiv 2309.17453), section 3.2: keep the first `sink` tokens (attention
// sinks) plus a rolling window of recent tokens, and assign positions INSIDE the cache, not in the text.
//   allowed(q, k) = k <= q  and  (k < sink  or  q - window < k)
//   RoPE position of the query at cache index q is q; of the key at cache index k is k.
// Keys are cached UN-rotated and rotated per tile with their cache index, so after the runtime's KV
// manager evicts the middle of the cache the positions stay dense (0 .. sink + window - 1).
#include "la_internal.h"

namespace longctx::la {
namespace {

class Streaming final : public Pattern {
 public:
  Streaming(int64_t sink, int64_t window) : sink_(sink), window_(window) {}
  int num_variants() const override { return 1; }
  bool keys_prerotated() const override { return false; }
  int64_t query_position(int, int64_t q) const override { return q; }
  int64_t key_position(int64_t k) const override { return k; }
  int64_t max_position(int64_t total) const override { return total - 1; }
  int spans(int64_t q0, int64_t q1, Span out[3]) const override {
    int n = 0;
    const int64_t sink_end = std::min(sink_, q1);
    if (sink_end > 0) out[n++] = Span{0, sink_end, 0};
    const int64_t win_begin = std::max(sink_end, q0 - window_ + 1);
    if (win_begin < q1) out[n++] = Span{win_begin, q1, 0};
    return n;
  }
  TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    if (k0 > q1 - 1) return TileKind::Empty;                        // all in the future
    if (k0 >= sink_ && k1 - 1 <= q0 - window_) return TileKind::Empty;  // all evicted from the window
    if (k1 - 1 <= q0 && (k1 - 1 < sink_ || k0 > q1 - 1 - window_)) return TileKind::Full;
    return TileKind::Partial;
  }
  bool allowed(int64_t q, int64_t k) const override { return k <= q && (k < sink_ || k > q - window_); }

 private:
  int64_t sink_, window_;
};

}  // namespace

std::unique_ptr<Pattern> MakeStreaming(int64_t sink, int64_t window, std::string* err) {
  if (sink < 0 || window < 1) {
    *err = "streaming needs sink >= 0 and window >= 1 (got sink=" + std::to_string(sink) +
           ", window=" + std::to_string(window) + ")";
    return nullptr;
  }
  return std::make_unique<Streaming>(sink, window);
}

}  // namespace longctx::la
