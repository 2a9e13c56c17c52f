// longctx_kernel_bench --long-attention: LongAttention dense prefill GFLOP/s against the box's FMA peak,
// and decode ms/token against the KV-bytes / triad-bandwidth bound, all measured in the same run, on
// `threads` threads (the rest of the bench is single-threaded).
//   longctx_kernel_bench --long-attention [threads] [max_len] [prefill|decode|all]
//   (defaults: hardware threads, 32768, all; LONGCTX_ISA=... picks the path)
// FLOPs counted for causal prefill: 4 * S * T * D * H / 2 (QK^T and PV, half the square).
// Peak: the active path's FMA loop (peak_*.cc) on every thread at once.
// Prefill also reports the process CPU time of the best call ("cpu ms"): on a shared box it leaves out the
// time other processes held the cores, so before/after comparisons are steadier than wall time.
// Bandwidth: STREAM triad a[i] = b[i] + s c[i] over 3 x 64 MiB on every thread, 3 x 4 bytes per element.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../tests/thread_pool.h"
#include "longctx/long_attention.h"
#include "peak.h"

namespace {

using Clock = std::chrono::steady_clock;
using longctx::test::ThreadPool;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double PeakGflops(int threads) {
  using Loop = double (*)(int64_t, float, float, float*);
  const Loop loops[] = {&longctx::bench::FmaLoopScalar, &longctx::bench::FmaLoopAvx2, &longctx::bench::FmaLoopAvx512};
  const Loop loop = loops[longctx_isa_active()];
  const int64_t iters = 50'000'000;
  std::vector<std::thread> ts;
  std::vector<float> sink(threads);
  std::vector<double> flops(threads);
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { flops[t] = loop(iters, 0.9999999f, 1e-7f, &sink[t]); });
  for (auto& t : ts) t.join();
  const double s = Seconds(t0, Clock::now());
  double total = 0;
  for (double f : flops) total += f;
  return total / s / 1e9;
}

double TriadGBs(int threads) {
  const size_t n = 16u << 20;  // 64 MiB per array
  std::vector<float> a(n), b(n, 1.f), c(n, 2.f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<std::thread> ts;
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        const size_t lo = n * t / threads, hi = n * (t + 1) / threads;
        for (size_t i = lo; i < hi; ++i) a[i] = b[i] + 3.f * c[i];
      });
    for (auto& t : ts) t.join();
    best = std::max(best, 3.0 * 4 * n / Seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

struct Layer {
  int64_t H, Hkv, D;
};

longctx_la_params Params(const Layer& l, int64_t S, int64_t past, int64_t cap, std::vector<float>& q, std::vector<float>& k,
                         std::vector<float>& v, std::vector<float>& kvk, std::vector<float>& kvv, std::vector<float>& out,
                         int32_t* seqlens, ThreadPool& pool) {
  longctx_la_params p{};
  p.dtype = LONGCTX_F32;
  p.batch = 1; p.seq_len = S; p.num_heads = l.H; p.kv_num_heads = l.Hkv; p.head_dim = l.D;
  p.query = q.data(); p.key = k.data(); p.value = v.data();
  p.past_key = p.present_key = kvk.data();
  p.past_value = p.present_value = kvv.data();
  p.past_len = p.present_len = cap;
  *seqlens = static_cast<int32_t>(past + S - 1);
  p.seqlens_k = seqlens;
  p.output = out.data();
  p.pattern = LONGCTX_LA_DENSE;
  p.isa_override = -1;
  p.parallel_for = &ThreadPool::ParallelFor;
  p.executor = &pool;
  p.num_threads_hint = pool.size();
  return p;
}

}  // namespace

namespace longctx::bench {

// argv[0..argc): [threads] [max_len] [prefill|decode|all]
int LongAttentionBench(int argc, char** argv) {
  const int threads = argc > 0 ? std::atoi(argv[0]) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t max_len = argc > 1 ? std::atoll(argv[1]) : 32768;
  const std::string phase = argc > 2 ? argv[2] : "all";
  if (threads < 1 || max_len < 1 || (phase != "all" && phase != "prefill" && phase != "decode")) {
    std::fprintf(stderr, "usage: longctx_kernel_bench --long-attention [threads >= 1] [max_len] [prefill|decode|all]\n");
    return 2;
  }
  ThreadPool pool(threads);
  char err[512];
  const double peak = PeakGflops(threads), triad = TriadGBs(threads);
  std::printf("threads=%d isa=%s  FMA peak %.1f GFLOP/s  triad %.1f GB/s\n", threads, longctx_isa_name(longctx_isa_active()), peak, triad);

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const Layer layers[] = {{8, 2, 64}, {32, 8, 128}};
  std::printf("\nprefill (dense, causal, fp32)\n%-14s %8s %10s %10s %8s %10s\n", "layer", "S", "ms", "GFLOP/s", "%peak", "cpu ms");
  for (const Layer& l : layers) {
    if (phase == "decode") break;
    for (int64_t S : {2048, 8192, 32768, 131072}) {
      if (S > max_len) continue;
      if (l.H == 32 && S > 32768) continue;
      std::vector<float> q(S * l.H * l.D), k(S * l.Hkv * l.D), v(k.size()), kvk(l.Hkv * S * l.D), kvv(kvk.size()), out(q.size());
      for (auto* x : {&q, &k, &v})
        for (auto& e : *x) e = U(rng);
      int32_t sl;
      auto p = Params(l, S, 0, S, q, k, v, kvk, kvv, out, &sl, pool);
      const int reps = S <= 2048 ? 3 : 1;
      double best = 1e30, best_cpu = 1e30;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = Clock::now();
        const double c0 = CpuSeconds();
        if (longctx_long_attention(&p, err, sizeof err) != LONGCTX_OK) { std::printf("error: %s\n", err); return 1; }
        best = std::min(best, Seconds(t0, Clock::now()));
        best_cpu = std::min(best_cpu, CpuSeconds() - c0);
      }
      const double flops = 4.0 * S * S * l.D * l.H / 2;
      char name[32];
      std::snprintf(name, sizeof name, "%lld/%lld x %lld", (long long)l.H, (long long)l.Hkv, (long long)l.D);
      std::printf("%-14s %8lld %10.1f %10.1f %7.1f%% %10.1f\n", name, (long long)S, best * 1e3, flops / best / 1e9,
                  100.0 * flops / best / 1e9 / peak, best_cpu * 1e3);
    }
  }

  std::printf("\ndecode (dense, fp32, shared 64k-row buffer)\n%-14s %8s %10s %12s %8s\n", "layer", "context", "ms/token", "bound ms", "x bound");
  for (const Layer& l : layers) {
    if (phase == "prefill") break;
    for (int64_t T : {8192, 32768}) {
      if (T > max_len) continue;
      const int64_t cap = 65536;
      std::vector<float> q(l.H * l.D), k(l.Hkv * l.D), v(k.size()), kvk(l.Hkv * cap * l.D), kvv(kvk.size()), out(q.size());
      for (auto* x : {&q, &k, &v, &kvk, &kvv})
        for (auto& e : *x) e = U(rng);
      int32_t sl;
      auto p = Params(l, 1, T - 1, cap, q, k, v, kvk, kvv, out, &sl, pool);
      double best = 1e30;
      for (int r = 0; r < 20; ++r) {
        const auto t0 = Clock::now();
        if (longctx_long_attention(&p, err, sizeof err) != LONGCTX_OK) { std::printf("error: %s\n", err); return 1; }
        best = std::min(best, Seconds(t0, Clock::now()));
      }
      const double bytes = 2.0 * T * l.Hkv * l.D * 4;
      const double bound = bytes / (triad * 1e9);
      char name[32];
      std::snprintf(name, sizeof name, "%lld/%lld x %lld", (long long)l.H, (long long)l.Hkv, (long long)l.D);
      std::printf("%-14s %8lld %10.3f %12.3f %8.2f\n", name, (long long)T, best * 1e3, bound * 1e3, best / bound);
    }
  }
  return 0;
}

}  // namespace longctx::bench
