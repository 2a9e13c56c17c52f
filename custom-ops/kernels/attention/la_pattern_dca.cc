// LongAttention pattern "dca": Dual Chunk Attention, An et al. 2024, "Training-Free Long-Context Scaling
// of Large Language Models" (arXiv 2402.17463, HKUNLP/ChunkLlama), as served for Qwen2.5-1M by vLLM:
// vllm/model_executor/layers/rotary_embedding/dual_chunk_rope.py (position tables) and
// vllm/attention/backends/dual_chunk_flash_attn.py (_dual_chunk_flash_attn_prefill_func: part ranges,
// softmax_scale * scaling_factor). With L = chunk_size - local_size (vLLM's chunk_len) and the query at
// cache index q in chunk c = floor(q / L):
//   keys               position k mod L                                     (k_t = arange % chunk_len)
//   intra  k in [cL, q]        query position q mod L                       (q_t)
//   succ   k in [(c-1)L, cL)   query position min(q mod L + L, chunk_size)  (qc_t, clamped)
//   inter  k in [0, (c-1)L)    query position min(2L - 1, chunk_size)       (qc_cache[chunk_len - 1])
// The three parts are one softmax over their union, i.e. exactly the log-sum-exp merge of the three
// flash calls in the reference. Softmax scale factor max(1, 0.1 ln(total / trained_context) + 1).
// Keys are cached UN-rotated. When the whole sequence fits one chunk (total <= L) only the intra part
// exists with positions q and k: identical to dense.
#include "la_internal.h"

namespace longctx::la {
namespace {

class Dca final : public Pattern {
 public:
  Dca(int64_t chunk_size, int64_t local_size, double factor)
      : chunk_(chunk_size), len_(chunk_size - local_size), factor_(factor) {}
  int num_variants() const override { return 3; }
  bool keys_prerotated() const override { return false; }
  int64_t query_align() const override { return len_; }
  int64_t query_position(int variant, int64_t q) const override {
    const int64_t r = q % len_;
    switch (variant) {
      case 0: return r;
      case 1: return std::min(r + len_, chunk_);
      default: return std::min(2 * len_ - 1, chunk_);
    }
  }
  int64_t key_position(int64_t k) const override { return k % len_; }
  int64_t max_position(int64_t total) const override {
    return total > len_ ? std::max(len_ - 1, std::min(2 * len_ - 1, chunk_)) : total - 1;
  }
  int spans(int64_t q0, int64_t q1, Span out[3]) const override {
    const int64_t c = q0 / len_;
    int n = 0;
    if (c >= 2) out[n++] = Span{0, (c - 1) * len_, 2};
    if (c >= 1) out[n++] = Span{(c - 1) * len_, c * len_, 1};
    out[n++] = Span{c * len_, q1, 0};
    return n;
  }
  TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    if (k0 > q1 - 1) return TileKind::Empty;
    if (k1 - 1 <= q0) return TileKind::Full;
    return TileKind::Partial;
  }
  bool allowed(int64_t q, int64_t k) const override { return k <= q; }
  double scale_factor() const override { return factor_; }

 private:
  int64_t chunk_, len_;
  double factor_;
};

}  // namespace

std::unique_ptr<Pattern> MakeDca(int64_t chunk_size, int64_t local_size, int64_t trained_context, int64_t total,
                                 std::string* err) {
  if (chunk_size <= 0 || local_size < 0 || local_size >= chunk_size) {
    *err = "dca needs chunk_size > local_size >= 0 (got chunk_size=" + std::to_string(chunk_size) +
           ", local_size=" + std::to_string(local_size) + ")";
    return nullptr;
  }
  if (trained_context < 0) {
    *err = "dca trained_context must be >= 0 (0 = no softmax scale factor), got " + std::to_string(trained_context);
    return nullptr;
  }
  double factor = 1.0;
  if (trained_context > 0) {
    factor = std::max(1.0, 0.1 * std::log(static_cast<double>(total) / static_cast<double>(trained_context)) + 1.0);
  }
  return std::make_unique<Dca>(chunk_size, local_size, factor);
}

}  // namespace longctx::la
