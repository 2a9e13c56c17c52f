// longctx_kernel_bench: a single-threaded microbenchmark of the kernels on every ISA path the CPU
// supports, next to two measured peaks of this box so rates read as fractions:
//   fma peak      independent multiply-add chains per ISA (GFLOP/s), the compute roof of each path
//                 (scalar = baseline SSE2 multiply + add, AVX2 / AVX-512 = FMA)
//   stream triad  a[i] = b[i] + s*c[i] over arrays far larger than the caches (GB/s, 3 x 4 bytes per
//                 element counted as in STREAM, McCalpin 1995), the bandwidth roof
// Kernels: kv_absmax / kv_quantize_int8 / kv_dequantize_int8 (bytes moved vs triad), and the reference
// attention (4*D flops per visible query-key pair vs the best peak; it is the oracle, not a fast path).
// --quick shrinks every size for a smoke run (the arrays then fit in cache, so ratios exceed 100%).
// Each figure is the best of several repetitions.
//
//   longctx_kernel_bench [--json] [--quick]      (LONGCTX_ISA=... restricts to one path)
//   longctx_kernel_bench --long-attention [threads] [max_len] [prefill|decode|all]   (bench_long_attention.cc)
//   longctx_kernel_bench --kivi [threads] [contexts] [rounds]   KIVI decode vs fp32 LongAttention (bench_kivi.cc)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "longctx/attention_reference.h"
#include "longctx/cpu.h"
#include "longctx/kvquant.h"
#include "peak.h"

namespace {

struct Row {
  std::string kernel, isa, shape;
  double ms = 0, rate = 0;
  std::string unit;
  double fraction = NAN;  // of the relevant measured peak
  std::string of;         // which peak
};

double BestMs(int reps, const std::function<void()>& fn) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

void Check(longctx_status st, const char* what) {
  if (st != LONGCTX_OK) {
    std::fprintf(stderr, "longctx_kernel_bench: %s failed: %s\n", what, longctx_status_name(st));
    std::exit(1);
  }
}

using FmaLoop = double (*)(int64_t, float, float, float*);

Row FmaPeak(longctx_isa isa, bool quick) {
  const FmaLoop loops[] = {&longctx::bench::FmaLoopScalar, &longctx::bench::FmaLoopAvx2,
                           &longctx::bench::FmaLoopAvx512};
  const int64_t iters = quick ? 2'000'000 : 20'000'000;
  float sink = 0;
  double flops = 0;
  const double ms = BestMs(5, [&] { flops = loops[isa](iters, 0.9999999f, 1e-7f, &sink); });
  if (sink == 12345.678f) std::fprintf(stderr, " ");  // keep the checksum observable
  return {"fma peak", longctx_isa_name(isa), std::to_string(iters) + " iters", ms, flops / ms / 1e6, "GFLOP/s", NAN, ""};
}

Row Triad(bool quick) {
  const size_t n = quick ? (size_t{1} << 21) : (size_t{1} << 24);  // 8 MiB or 64 MiB per array
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  const float s = 3.0f;
  const double ms = BestMs(quick ? 3 : 5, [&] {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    for (size_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
  });
  if (a[n / 2] != 7.0f) std::fprintf(stderr, "longctx_kernel_bench: triad checksum wrong\n");
  return {"stream triad", "-", "3 x " + std::to_string(n * 4 >> 20) + " MiB", ms, 3.0 * 4 * n / ms / 1e6, "GB/s", NAN, ""};
}

std::vector<Row> KvQuant(longctx_isa isa, bool quick, double triad_gbs) {
  const int64_t T = quick ? 512 : 16384, C = 1024;  // 64 MiB of fp32 in the full run
  std::vector<float> x(T * C), scales(C), y(T * C);
  std::vector<int8_t> q(T * C);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& f : x) f = nd(rng);
  const std::string shape = std::to_string(T) + "x" + std::to_string(C);
  const int reps = quick ? 3 : 10;
  longctx_kv_absmax_params ap{T, C, x.data(), C, scales.data()};
  longctx_kv_quantize_params qp{T, C, x.data(), C, q.data(), C, scales.data()};
  longctx_kv_dequantize_params dp{T, C, q.data(), C, scales.data(), y.data(), C};
  std::vector<Row> rows;
  auto add = [&](const char* kernel, double bytes, const std::function<longctx_status()>& fn) {
    const double ms = BestMs(reps, [&] { Check(fn(), kernel); });
    const double gbs = bytes / ms / 1e6;
    rows.push_back({kernel, longctx_isa_name(isa), shape, ms, gbs, "GB/s", gbs / triad_gbs, "triad"});
  };
  const double n = static_cast<double>(T * C);
  add("kv_absmax", 4 * n, [&] { return longctx_kv_absmax(&ap); });
  add("kv_quantize_int8", 4 * n * 2 + n, [&] { return longctx_kv_quantize_int8(&qp); });  // x read twice
  add("kv_dequantize_int8", n + 4 * n, [&] { return longctx_kv_dequantize_int8(&dp); });
  return rows;
}

Row Attention(const char* name, int64_t Hq, int64_t Hkv, int64_t S, int64_t T, int64_t D, double best_peak) {
  std::vector<float> q(Hq * S * D), k(Hkv * T * D), v(Hkv * T * D), out(Hq * S * D);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto* vec : {&q, &k, &v}) for (float& f : *vec) f = u(rng);
  longctx_attention_reference_params p{};
  p.batch = 1, p.q_heads = Hq, p.kv_heads = Hkv, p.q_len = S, p.kv_len = T, p.head_dim = D;
  p.q_offset = T - S, p.causal = 1, p.local_window = -1;
  p.q = q.data(), p.q_stride_b = Hq * S * D, p.q_stride_h = S * D, p.q_stride_s = D;
  p.k = k.data(), p.k_stride_b = Hkv * T * D, p.k_stride_h = T * D, p.k_stride_s = D;
  p.v = v.data(), p.v_stride_b = Hkv * T * D, p.v_stride_h = T * D, p.v_stride_s = D;
  p.out = out.data(), p.out_stride_b = Hq * S * D, p.out_stride_h = S * D, p.out_stride_s = D;
  double pairs = 0;
  for (int64_t i = 0; i < S; ++i) pairs += static_cast<double>(T - S + i + 1);
  const double flops = 4.0 * D * pairs * Hq;
  const double ms = BestMs(3, [&] { Check(longctx_attention_reference(&p), "attention_reference"); });
  const double gflops = flops / ms / 1e6;
  char shape[96];
  std::snprintf(shape, sizeof shape, "Hq%lld Hkv%lld S%lld T%lld D%lld", (long long)Hq, (long long)Hkv, (long long)S,
                (long long)T, (long long)D);
  return {name, "ref", shape, ms, gflops, "GFLOP/s", gflops / best_peak, "best fma peak"};
}

std::string Json(const std::vector<Row>& rows, const std::string& paths) {
  std::string s = "{\n  \"isa_paths\": \"" + paths + "\",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "    {\"kernel\": \"%s\", \"isa\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"rate\": %.4f, "
                  "\"unit\": \"%s\", \"fraction_of_peak\": %s, \"peak\": \"%s\"}%s\n",
                  r.kernel.c_str(), r.isa.c_str(), r.shape.c_str(), r.ms, r.rate, r.unit.c_str(),
                  std::isnan(r.fraction) ? "null" : std::to_string(r.fraction).c_str(), r.of.c_str(),
                  i + 1 < rows.size() ? "," : "");
    s += buf;
  }
  return s + "  ]\n}\n";
}

void Table(const std::vector<Row>& rows, const std::string& paths, const std::string& skipped) {
  std::printf("%-28s %-7s %-30s %10s %12s %-8s %s\n", "kernel", "isa", "shape", "best ms", "rate", "unit",
              "of peak");
  for (const Row& r : rows) {
    char frac[64] = "-";
    if (!std::isnan(r.fraction)) std::snprintf(frac, sizeof frac, "%.1f%% of %s", 100.0 * r.fraction, r.of.c_str());
    std::printf("%-28s %-7s %-30s %10.3f %12.2f %-8s %s\n", r.kernel.c_str(), r.isa.c_str(), r.shape.c_str(), r.ms,
                r.rate, r.unit.c_str(), frac);
  }
  std::printf("(single thread; best of several runs; ISA paths: %s; skipped: %s)\n", paths.c_str(),
              skipped.empty() ? "none" : skipped.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const bool la = argc > 1 && std::strcmp(argv[1], "--long-attention") == 0, kivi = argc > 1 && std::strcmp(argv[1], "--kivi") == 0;
  if (la || kivi) {
    if (const char* err = longctx_isa_choice_error()) {
      std::fprintf(stderr, "longctx_kernel_bench: refused: %s\n", err);
      return 3;
    }
    return la ? longctx::bench::LongAttentionBench(argc - 2, argv + 2) : longctx::bench::KiviBench(argc - 2, argv + 2);
  }
  bool json = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else {
      std::fprintf(stderr, "usage: longctx_kernel_bench [--json] [--quick] | --long-attention [threads] [max_len] [prefill|decode|all] | --kivi [threads] [contexts] [rounds]   (LONGCTX_ISA=scalar|avx2|avx512 selects one path)\n");
      return 2;
    }
  }
  if (const char* err = longctx_isa_choice_error()) {
    std::fprintf(stderr, "longctx_kernel_bench: refused: %s\n", err);
    return 3;
  }
  const char* env = std::getenv("LONGCTX_ISA");
  const bool forced = env != nullptr && *env != '\0';
  const longctx_isa loaded = longctx_isa_active();

  std::vector<Row> rows;
  std::string paths, skipped;
  std::vector<longctx_isa> isas;
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    const auto isa = static_cast<longctx_isa>(i);
    if (forced && isa != loaded) continue;
    char missing[128];
    if (!longctx_isa_supported(isa, missing, sizeof missing)) {
      skipped += std::string(skipped.empty() ? "" : "; ") + longctx_isa_name(isa) + " (CPU lacks " + missing + ")";
      continue;
    }
    isas.push_back(isa);
    paths += std::string(paths.empty() ? "" : " ") + longctx_isa_name(isa);
  }

  double best_peak = 0;
  for (longctx_isa isa : isas) {
    rows.push_back(FmaPeak(isa, quick));
    best_peak = std::max(best_peak, rows.back().rate);
  }
  const Row triad = Triad(quick);
  rows.push_back(triad);
  for (longctx_isa isa : isas) {
    if (!forced && longctx_isa_set(isa) != LONGCTX_OK) continue;
    for (Row& r : KvQuant(isa, quick, triad.rate)) rows.push_back(std::move(r));
  }
  longctx_isa_reset();
  rows.push_back(Attention("attention_reference decode", 8, 2, 1, quick ? 1024 : 4096, 128, best_peak));
  rows.push_back(Attention("attention_reference prefill", 4, 4, quick ? 128 : 512, quick ? 128 : 512, 64, best_peak));

  if (json) std::fputs(Json(rows, paths).c_str(), stdout);
  else Table(rows, paths, skipped);
  return 0;
}
