// Test and bench exports of the sparse prefill patterns, for one float32 prefill (batch 1, no past, RoPE when cos
// is given): LongCtxLaSparseMask, the selected index (longctx_la_sparse_mask), so the C# tests build a masked dense
// reference from exactly what the kernel selected; LongCtxLaSparseStats, one call's longctx_la_stats (density and
// the time in estimation), for the bench.
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "longctx/long_attention.h"

#define LONGCTX_EXPORT __attribute__((visibility("default")))

namespace {

// longctx_parallel_for_fn on `threads` std::threads (started per call; the bench times the kernel's own split).
struct Threads {
  int n;
  static void For(void* self, int64_t count, longctx_task_fn fn, void* ctx) {
    const int n = static_cast<Threads*>(self)->n;
    std::vector<std::thread> pool;
    for (int t = 0; t < n; ++t)
      pool.emplace_back([=] {
        for (int64_t i = t; i < count; i += n) fn(ctx, i);
      });
    for (auto& th : pool) th.join();
  }
};

longctx_la_pattern PatternOf(const char* pattern) {
  const std::string name = pattern != nullptr ? pattern : "";
  return name == "trishape" ? LONGCTX_LA_TRISHAPE : name == "vslash" ? LONGCTX_LA_VSLASH
       : name == "xattn" ? LONGCTX_LA_XATTN : name == "block" ? LONGCTX_LA_BLOCK
       : name == "dense" ? LONGCTX_LA_DENSE : static_cast<longctx_la_pattern>(-1);
}

// One float32 prefill call (batch 1, no past) with its present and output buffers.
struct Prefill {
  std::vector<float> pk, pv, out;
  int32_t seqlens;
  longctx_la_params p{};
  Prefill(const char* pattern, int64_t S, int64_t H, int64_t Hkv, int64_t D, const float* q, const float* k, const float* v,
          const float* cos, const float* sin, int64_t max_pos, const longctx_la_sparse& sparse, int64_t sink, int64_t window)
      : pk(static_cast<size_t>(Hkv * S * D)), pv(pk.size()), out(static_cast<size_t>(S * H * D)),
        seqlens(static_cast<int32_t>(S - 1)) {
    p.pattern = PatternOf(pattern);
    p.dtype = LONGCTX_F32;
    p.batch = 1; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D;
    p.query = q; p.key = k; p.value = v;
    p.present_key = pk.data(); p.present_value = pv.data(); p.present_len = S;
    p.seqlens_k = &seqlens;
    p.output = out.data();
    p.do_rotary = cos != nullptr; p.cos_cache = cos; p.sin_cache = sin; p.rotary_dim = D; p.max_pos = max_pos;
    p.sink = sink; p.window = window;
    p.sparse = sparse;
    p.isa_override = -1;
  }
};

}  // namespace

// pattern: "dense" | "trishape" | "vslash" | "xattn". q [S, H*D], k/v [S, Hkv*D], cos/sin [max_pos, D/2] (NULL: no RoPE).
// mask [Hkv, S, S]. Returns 0, or writes a one-line message to err and returns the status.
extern "C" LONGCTX_EXPORT int LongCtxLaSparseMask(const char* pattern, int64_t S, int64_t H, int64_t Hkv, int64_t D,
                                                  const float* q, const float* k, const float* v, const float* cos,
                                                  const float* sin, int64_t max_pos, int64_t min_len, int64_t vertical,
                                                  int64_t slash, float threshold, int64_t stride, int64_t sink,
                                                  int64_t window, int64_t last, int64_t local_blocks, int64_t vert_stride, uint8_t* mask, char* err, size_t err_len) {
  Prefill call(pattern, S, H, Hkv, D, q, k, v, cos, sin, max_pos, {min_len, vertical, slash, threshold, stride, last, local_blocks, vert_stride}, sink, window);
  return static_cast<int>(longctx_la_sparse_mask(&call.p, mask, err, err_len));
}

// Runs the kernel once on the prefill with `threads` threads; stats[0..6] = longctx_la_stats in field order.
extern "C" LONGCTX_EXPORT int LongCtxLaSparseStats(const char* pattern, int64_t S, int64_t H, int64_t Hkv, int64_t D,
                                                   const float* q, const float* k, const float* v, const float* cos,
                                                   const float* sin, int64_t max_pos, int64_t min_len, int64_t vertical,
                                                   int64_t slash, float threshold, int64_t stride, int64_t sink,
                                                   int64_t window, int64_t last, int64_t local_blocks, int64_t vert_stride, int threads, int64_t* stats, char* err,
                                                   size_t err_len) {
  Prefill call(pattern, S, H, Hkv, D, q, k, v, cos, sin, max_pos, {min_len, vertical, slash, threshold, stride, last, local_blocks, vert_stride}, sink, window);
  Threads pool{threads > 0 ? threads : 1};
  call.p.parallel_for = &Threads::For; call.p.executor = &pool; call.p.num_threads_hint = pool.n;
  longctx_la_stats st{};
  call.p.stats = &st;
  const int rc = static_cast<int>(longctx_long_attention(&call.p, err, err_len));
  const int64_t fields[7] = {st.sparse_heads, st.gated_heads, st.covered_heads, st.keys_selected, st.keys_causal, st.estimate_ns, st.total_ns};
  std::memcpy(stats, fields, sizeof fields);
  return rc;
}

// The selected index with per-kv-head settings (longctx_la_head, issue 10 per-head calibration): head h runs
// patterns[h] (0 dense, 3 trishape, 4 vslash, 5 xattn, 6 block) with vertical[h], slash[h], threshold[h], sink[h],
// window[h], last[h]; min_len, stride, local_blocks and vert_stride are shared. Same inputs and mask as LongCtxLaSparseMask.
extern "C" LONGCTX_EXPORT int LongCtxLaSparseMaskHeads(int64_t S, int64_t H, int64_t Hkv, int64_t D, const float* q, const float* k,
                                                       const float* v, const float* cos, const float* sin, int64_t max_pos,
                                                       const int64_t* patterns, const int64_t* vertical, const int64_t* slash,
                                                       const float* threshold, const int64_t* sink, const int64_t* window,
                                                       const int64_t* last, int64_t min_len, int64_t stride, int64_t local_blocks,
                                                       int64_t vert_stride, uint8_t* mask, char* err, size_t err_len) {
  const longctx_la_sparse shared{min_len, 0, 0, 1.f, stride, 0, local_blocks, vert_stride};
  Prefill call("dense", S, H, Hkv, D, q, k, v, cos, sin, max_pos, shared, 0, 1);
  std::vector<longctx_la_head> heads(static_cast<size_t>(Hkv));
  for (int64_t h = 0; h < Hkv; ++h) {
    longctx_la_sparse sp = shared;
    sp.vertical = vertical[h]; sp.slash = slash[h]; sp.threshold = threshold[h]; sp.last = last[h];
    heads[static_cast<size_t>(h)] = longctx_la_head{static_cast<longctx_la_pattern>(patterns[h]), sink[h], window[h], sp};
  }
  call.p.heads = heads.data();
  return static_cast<int>(longctx_la_sparse_mask(&call.p, mask, err, err_len));
}
