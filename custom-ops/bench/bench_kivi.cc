// longctx_kernel_bench --kivi: KIVI decode against the fp32 LongAttention decode it replaces, one attention call per
// layer, side by side and interleaved (every variant once per round, rounds repeated), on `threads` threads:
//   longctx_kernel_bench --kivi [threads] [contexts, e.g. 8192,32768] [rounds]
//   (defaults: hardware threads, 8192, 30; LONGCTX_ISA=... picks the path)
// Layers: recall-public's (4 query heads over 2 kv heads, head_dim 32) and a wider one (8 / 2 x 64). A context of T
// tokens is, for KIVI, a quantized prefix of T - R tokens rounded down to the group (R = 128, G = 32, the defaults of
// `lcc compile --kv kivi*`) and the rest as the fp32 residual; LongAttention reads T fp32 rows from its KV buffer.
// Columns: median and best ms per call, KV bytes the call reads, and the ratio of the median to LongAttention's.
// The load average is printed first: on a shared box, compare the ratios of one run, not figures across runs.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../tests/thread_pool.h"
#include "longctx/kivi.h"
#include "longctx/long_attention.h"

namespace {

using Clock = std::chrono::steady_clock;
using longctx::test::ThreadPool;

struct Layer {
  int64_t H, Hkv, D;
};

// The inputs of one decode call at context T for one variant (bits 0: fp32 LongAttention).
struct Case {
  int bits = 0;
  std::vector<float> q, k, v, kvk, kvv, out, kp, vp, pk, pv, prk, prv;
  std::vector<uint8_t> kc, vc;
  int32_t seqlen = 0;
  longctx_la_params la{};
  longctx_kivi_attention_params kivi{};
  double bytes = 0;
};

void Fill(std::vector<float>& x, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  x.resize(n);
  for (auto& e : x) e = nd(rng);
}

bool Make(Case& c, const Layer& l, int64_t T, int bits, ThreadPool& pool, std::mt19937& rng) {
  const int64_t H = l.H, Hkv = l.Hkv, D = l.D, G = 32, R = 128;
  c.bits = bits;
  Fill(c.q, H * D, rng);
  Fill(c.k, Hkv * D, rng);
  Fill(c.v, Hkv * D, rng);
  c.out.assign(H * D, 0.f);
  if (bits == 0) {
    Fill(c.kvk, Hkv * T * D, rng);
    Fill(c.kvv, Hkv * T * D, rng);
    auto& p = c.la;
    p.dtype = LONGCTX_F32;
    p.batch = 1; p.seq_len = 1; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D;
    p.query = c.q.data(); p.key = c.k.data(); p.value = c.v.data();
    p.past_key = p.present_key = c.kvk.data();
    p.past_value = p.present_value = c.kvv.data();
    p.past_len = p.present_len = T;
    c.seqlen = static_cast<int32_t>(T - 1);
    p.seqlens_k = &c.seqlen;
    p.output = c.out.data();
    p.pattern = LONGCTX_LA_DENSE;
    p.isa_override = -1;
    p.parallel_for = &ThreadPool::ParallelFor;
    p.executor = &pool;
    p.num_threads_hint = pool.size();
    c.bytes = 2.0 * Hkv * T * D * 4;
    return true;
  }
  const int64_t Pq = std::max<int64_t>(0, (T - 1 - R) / G * G), Rp = T - 1 - Pq, rb = D * bits / 8;
  std::vector<float> xk, xv;
  Fill(xk, Hkv * Pq * D, rng);
  Fill(xv, Hkv * Pq * D, rng);
  c.kc.assign(Hkv * Pq * rb, 0);
  c.vc.assign(c.kc.size(), 0);
  c.kp.assign(Hkv * (Pq / G) * 2 * D, 0.f);
  c.vp.assign(Hkv * Pq * 2 * (D / G), 0.f);
  for (int64_t h = 0; h < Hkv; ++h) {
    longctx_kivi_quant_params a{bits, G, Pq, D, xk.data() + h * Pq * D, D, c.kc.data() + h * Pq * rb, c.kp.data() + h * (Pq / G) * 2 * D, nullptr, 0};
    longctx_kivi_quant_params b{bits, G, Pq, D, xv.data() + h * Pq * D, D, c.vc.data() + h * Pq * rb, c.vp.data() + h * Pq * 2 * (D / G), nullptr, 0};
    if (longctx_kivi_quantize_keys(&a) != LONGCTX_OK || longctx_kivi_quantize_values(&b) != LONGCTX_OK) return false;
  }
  Fill(c.pk, Hkv * Rp * D, rng);
  Fill(c.pv, Hkv * Rp * D, rng);
  c.prk.assign(Hkv * (Rp + 1) * D, 0.f);
  c.prv.assign(c.prk.size(), 0.f);
  auto& p = c.kivi;
  p.batch = 1; p.seq_len = 1; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D; p.bits = bits; p.group = G;
  p.query = c.q.data(); p.key = c.k.data(); p.value = c.v.data();
  p.quant_len = Pq; p.key_codes = c.kc.data(); p.key_params = c.kp.data(); p.value_codes = c.vc.data(); p.value_params = c.vp.data();
  p.residual_len = Rp; p.past_key = c.pk.data(); p.past_value = c.pv.data();
  p.present_key = c.prk.data(); p.present_value = c.prv.data(); p.output = c.out.data();
  p.parallel_for = &ThreadPool::ParallelFor;
  p.executor = &pool;
  c.bytes = static_cast<double>(c.kc.size() + c.vc.size()) + 4.0 * (c.kp.size() + c.vp.size() + c.pk.size() + c.pv.size());
  return true;
}

bool Call(Case& c, char* err, size_t n) {
  return (c.bits == 0 ? longctx_long_attention(&c.la, err, n) : longctx_kivi_attention(&c.kivi, err, n)) == LONGCTX_OK;
}

std::string LoadAvg() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  char buf[128] = "";
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
  return buf;
}

}  // namespace

namespace longctx::bench {

// argv[0..argc): [threads] [contexts] [rounds]
int KiviBench(int argc, char** argv) {
  const int threads = argc > 0 ? std::atoi(argv[0]) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int64_t> contexts;
  for (std::string s = argc > 1 ? argv[1] : "8192"; !s.empty();) {
    const size_t comma = s.find(',');
    contexts.push_back(std::atoll(s.substr(0, comma).c_str()));
    s = comma == std::string::npos ? "" : s.substr(comma + 1);
  }
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 30;
  const bool bad = threads < 1 || rounds < 1 || std::any_of(contexts.begin(), contexts.end(), [](int64_t t) { return t < 2; });
  if (bad) {
    std::fprintf(stderr, "usage: longctx_kernel_bench --kivi [threads >= 1] [contexts >= 2, comma-separated] [rounds >= 1]\n");
    return 2;
  }
  ThreadPool pool(threads);
  std::mt19937 rng(7);
  char err[512];
  std::printf("threads=%d isa=%s rounds=%d loadavg: %s\n", threads, longctx_isa_name(longctx_isa_active()), rounds, LoadAvg().c_str());
  std::printf("%-12s %8s %-16s %10s %10s %10s %12s\n", "layer", "context", "variant", "median ms", "best ms", "KV MiB", "vs fp32 LA");
  const Layer layers[] = {{4, 2, 32}, {8, 2, 64}};
  const char* names[] = {"fp32/long-attn", "kivi4", "kivi2"};
  for (const Layer& l : layers)
    for (int64_t T : contexts) {
      Case cases[3];
      const int bits[] = {0, 4, 2};
      for (int i = 0; i < 3; ++i)
        if (!Make(cases[i], l, T, bits[i], pool, rng)) { std::printf("error: quantize failed\n"); return 1; }
      std::vector<double> ms[3];
      for (int r = 0; r < rounds + 2; ++r)  // interleaved: every variant once per round; the first two rounds warm up
        for (int i = 0; i < 3; ++i) {
          const auto t0 = Clock::now();
          if (!Call(cases[i], err, sizeof err)) { std::printf("error: %s\n", err); return 1; }
          if (r >= 2) ms[i].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        }
      double base = 0;
      for (int i = 0; i < 3; ++i) {
        std::sort(ms[i].begin(), ms[i].end());
        const double med = ms[i][ms[i].size() / 2];
        if (i == 0) base = med;
        char name[32];
        std::snprintf(name, sizeof name, "%lld/%lld x %lld", (long long)l.H, (long long)l.Hkv, (long long)l.D);
        std::printf("%-12s %8lld %-16s %10.4f %10.4f %10.3f %11.2fx\n", name, (long long)T, names[i], med, ms[i][0],
                    cases[i].bytes / 1048576.0, med / base);
      }
    }
  std::printf("(one call = one layer's decode step; loadavg after: %s)\n", LoadAvg().c_str());
  return 0;
}

}  // namespace longctx::bench
