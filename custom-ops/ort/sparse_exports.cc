// Test and bench exports of the sparse prefill patterns, for one float32 prefill (batch 1, no past, RoPE when cos
// is given): LongCtxLaSparseMask, the selected index (longctx_la_sparse_mask), so the C# tests build a masked dense
// reference from exactly what the kernel selected; LongCtxLaSparseStats, one call's longctx_la_stats (density and
// the time in estimation), for the bench.
#include <algorithm>
#include <cmath>
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

// Calibration scorer (issue 10 per-head calibration; src/Cli/Calibration/AttentionCalibration.cs): for each query head h and
// each of C candidate masks [Hkv, S, S] (1 = attended), err2[c * H + h] = sum over rows i of ||O_c(i) - O(i)||^2 and
// norm2[h] = sum_i ||O(i)||^2, where O(i) is dense causal attention of row i and O_c(i) the same softmax restricted to the
// masked keys (renormalised), all in double from q [S, H*D] and k [S, Hkv*D] already rotated (double) and v [S, Hkv*D].
// The logits of a row are computed once and shared by every candidate (the managed scorer's loop, natively). Work is split
// into (head, 64-row block) tasks on `threads` threads; each task's sums are added in task order, so the result does not
// depend on the thread count.
extern "C" LONGCTX_EXPORT int LongCtxLaMaskErrors(int64_t S, int64_t H, int64_t Hkv, int64_t D, const double* q, const double* k,
                                                  const float* v, double scale, const uint8_t* const* masks, int64_t C,
                                                  int threads, double* err2, double* norm2) {
  if (S < 1 || H < 1 || Hkv < 1 || H % Hkv != 0 || D < 1 || C < 0 || (masks == nullptr && C > 0)) return 1;
  constexpr int64_t kRows = 64;
  const int64_t G = H / Hkv, nblk = (S + kRows - 1) / kRows, ntasks = H * nblk;
  std::vector<double> part(static_cast<size_t>(ntasks * (C + 1)), 0.0);  // per task: C errors, then the norm
  auto task = [&](int64_t t) {
    const int64_t h = t / nblk, kvh = h / G, i0 = t % nblk * kRows, i1 = std::min(S, i0 + kRows);
    double* out = part.data() + t * (C + 1);
    std::vector<double> w(static_cast<size_t>(S)), dense(static_cast<size_t>(D)), acc(static_cast<size_t>(D));
    for (int64_t i = i0; i < i1; ++i) {
      const double* qi = q + (i * H + h) * D;
      double mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        const double* kj = k + (j * Hkv + kvh) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
        w[static_cast<size_t>(j)] = dot * scale;
        mx = std::max(mx, w[static_cast<size_t>(j)]);
      }
      for (int64_t j = 0; j <= i; ++j) w[static_cast<size_t>(j)] = std::exp(w[static_cast<size_t>(j)] - mx);
      // out = sum w_j v_j / sum w_j over j <= i (masked when `mask` is set)
      auto weighted = [&](const uint8_t* mask, std::vector<double>& o) {
        std::fill(o.begin(), o.end(), 0.0);
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          if (mask != nullptr && mask[j] == 0) continue;
          const double wj = w[static_cast<size_t>(j)];
          sum += wj;
          const float* vj = v + (j * Hkv + kvh) * D;
          for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] += wj * vj[d];
        }
        if (sum > 0)
          for (double& x : o) x /= sum;
      };
      weighted(nullptr, dense);
      for (const double x : dense) out[C] += x * x;
      for (int64_t c = 0; c < C; ++c) {
        weighted(masks[c] + (kvh * S + i) * S, acc);
        double e = 0;
        for (int64_t d = 0; d < D; ++d) e += (acc[static_cast<size_t>(d)] - dense[static_cast<size_t>(d)]) * (acc[static_cast<size_t>(d)] - dense[static_cast<size_t>(d)]);
        out[c] += e;
      }
    }
  };
  struct Ctx { decltype(task)* f; } ctx{&task};
  Threads pool{threads > 0 ? threads : 1};
  Threads::For(&pool, ntasks, [](void* c, int64_t t) { (*static_cast<Ctx*>(c)->f)(t); }, &ctx);
  std::fill(err2, err2 + C * H, 0.0);
  std::fill(norm2, norm2 + H, 0.0);
  for (int64_t t = 0; t < ntasks; ++t) {
    const int64_t h = t / nblk;
    for (int64_t c = 0; c < C; ++c) err2[c * H + h] += part[static_cast<size_t>(t * (C + 1) + c)];
    norm2[h] += part[static_cast<size_t>(t * (C + 1) + C)];
  }
  return 0;
}
