// KIVI (longctx/kivi.h) on the active ISA path against oracles written here from the header's formulas:
// codes bit-exact (scale / zero / reciprocal are computed once, rounding is round-half-even on every path), the
// round-trip bound |y - x| <= scale / 2 (+1e-6 relative), attention over [quantized prefix | past residual | new
// tokens] against a double-precision dense attention over the dequantized prefix (|diff| <= 1e-4; fp32
// accumulation over <= 4300 keys of unit-scale data), present = residual ++ rotated new keys (exact), bad arguments.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "longctx/kivi.h"
#include "tests.h"

namespace longctx::test {
namespace {

// (min, scale, inv) of one group, as kivi.cc computes them.
struct Rng3 { float zero, scale, inv; };
Rng3 RangeOf(float lo, float hi, int bits) {
  const float s = (hi - lo) / static_cast<float>((1 << bits) - 1);
  return {lo, s, s > 0.0f ? 1.0f / s : 0.0f};
}
unsigned Code(float x, Rng3 r, int bits) {
  float v = (x - r.zero) * r.inv;
  const float qmax = static_cast<float>((1 << bits) - 1);
  v = v < 0.0f ? 0.0f : (v > qmax ? qmax : v);
  return static_cast<unsigned>(std::nearbyint(v));
}
unsigned CodeAt(const std::vector<uint8_t>& codes, int64_t row, int64_t j, int64_t D, int bits) {
  const int per = 8 / bits;
  return (codes[row * (D * bits / 8) + j / per] >> (bits * (j % per))) & ((1u << bits) - 1u);
}

// Dequantized keys / values of T tokens by the oracle (codes from the formulas, not the kernel).
std::vector<float> OracleKeys(const std::vector<float>& x, int64_t T, int64_t D, int64_t G, int bits) {
  std::vector<float> y(T * D);
  for (int64_t g = 0; g < T / G; ++g)
    for (int64_t j = 0; j < D; ++j) {
      float lo = x[g * G * D + j], hi = lo;
      for (int64_t r = 0; r < G; ++r) lo = std::min(lo, x[(g * G + r) * D + j]), hi = std::max(hi, x[(g * G + r) * D + j]);
      const Rng3 rg = RangeOf(lo, hi, bits);
      for (int64_t r = 0; r < G; ++r) y[(g * G + r) * D + j] = static_cast<float>(Code(x[(g * G + r) * D + j], rg, bits)) * rg.scale + rg.zero;
    }
  return y;
}
std::vector<float> OracleValues(const std::vector<float>& x, int64_t T, int64_t D, int64_t G, int bits) {
  std::vector<float> y(T * D);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < D / G; ++g) {
      float lo = x[t * D + g * G], hi = lo;
      for (int64_t j = g * G; j < (g + 1) * G; ++j) lo = std::min(lo, x[t * D + j]), hi = std::max(hi, x[t * D + j]);
      const Rng3 rg = RangeOf(lo, hi, bits);
      for (int64_t j = g * G; j < (g + 1) * G; ++j) y[t * D + j] = static_cast<float>(Code(x[t * D + j], rg, bits)) * rg.scale + rg.zero;
    }
  return y;
}

std::vector<float> Random(size_t n, uint32_t seed, float spread = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = nd(rng) * (i % 7 == 3 ? 4.0f * spread : spread);  // an outlier channel every 7
  return v;
}

void RoundTrip(Ctx& ctx, int bits, int64_t T, int64_t D, int64_t G) {
  const auto x = Random(T * D, static_cast<uint32_t>(bits * 1000 + T + D));
  const int64_t rb = D * bits / 8;
  for (bool keys : {true, false}) {
    std::vector<uint8_t> codes(T * rb + 1, 0xA5);
    std::vector<float> params(keys ? T / G * 2 * D : T * 2 * (D / G)), y(T * D + 1, 777.0f);
    longctx_kivi_quant_params p{bits, G, T, D, x.data(), D, codes.data(), params.data(), y.data(), D};
    CHECK(ctx, (keys ? longctx_kivi_quantize_keys(&p) : longctx_kivi_quantize_values(&p)) == LONGCTX_OK);
    CHECK(ctx, (keys ? longctx_kivi_dequantize_keys(&p) : longctx_kivi_dequantize_values(&p)) == LONGCTX_OK);
    CHECK_MSG(ctx, codes[T * rb] == 0xA5 && y[T * D] == 777.0f, "wrote past the end (bits=%d keys=%d)", bits, keys);
    const auto want = keys ? OracleKeys(x, T, D, G, bits) : OracleValues(x, T, D, G, bits);
    int64_t bad = 0, over = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < D; ++j) {
        const float s = keys ? params[(t / G) * 2 * D + j] : params[t * 2 * (D / G) + j / G];
        if (std::fabs(y[t * D + j] - want[t * D + j]) > 1e-6f * (1.0f + std::fabs(want[t * D + j]))) ++bad;
        if (std::fabs(y[t * D + j] - x[t * D + j]) > s * 0.5f + 1e-5f * (1.0f + std::fabs(x[t * D + j]))) ++over;
        (void)CodeAt;
      }
    CHECK_MSG(ctx, bad == 0, "bits=%d keys=%d: %lld values differ from the oracle", bits, keys, (long long)bad);
    CHECK_MSG(ctx, over == 0, "bits=%d keys=%d: %lld values beyond scale/2", bits, keys, (long long)over);
  }
}

void Rope(std::vector<double>& x, const float* cos, const float* sin, int64_t half, int64_t pos) {
  for (int64_t j = 0; j < half; ++j) {
    const double c = cos[pos * half + j], s = sin[pos * half + j], a = x[j], b = x[j + half];
    x[j] = a * c - b * s;
    x[j + half] = b * c + a * s;
  }
}

// Shapes: H query heads over Hkv kv heads, head_dim D, group G (defaults: 4 / 2 / 64 / 32).
void Attention(Ctx& ctx, int bits, int64_t B, int64_t S, int64_t Pq, int64_t Rp, int64_t H = 4, int64_t Hkv = 2,
               int64_t D = 64, int64_t G = 32) {
  const int64_t Gh = H / Hkv, T = Rp + S, rb = D * bits / 8, max_pos = Pq + T + 4;
  const int64_t half = D / 2;
  std::vector<float> cos(max_pos * half), sin(max_pos * half);
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double f = p * std::pow(10000.0, -2.0 * j / D);
      cos[p * half + j] = static_cast<float>(std::cos(f));
      sin[p * half + j] = static_cast<float>(std::sin(f));
    }
  const auto q = Random(B * S * H * D, 11), k = Random(B * S * Hkv * D, 12), v = Random(B * S * Hkv * D, 13);
  const auto pk = Random(B * Hkv * Rp * D, 14), pv = Random(B * Hkv * Rp * D, 15);
  const auto xk = Random(B * Hkv * Pq * D, 16), xv = Random(B * Hkv * Pq * D, 17);
  std::vector<uint8_t> kc(B * Hkv * Pq * rb + 1), vc(kc.size());
  std::vector<float> kp(B * Hkv * Pq / G * 2 * D + 1), vp(B * Hkv * Pq * 2 * (D / G) + 1);
  std::vector<std::vector<float>> dk, dv;  // oracle dequantized prefix per (b, kv head)
  for (int64_t bh = 0; bh < B * Hkv; ++bh) {
    std::vector<float> xs(xk.begin() + bh * Pq * D, xk.begin() + (bh + 1) * Pq * D), vs(xv.begin() + bh * Pq * D, xv.begin() + (bh + 1) * Pq * D);
    longctx_kivi_quant_params a{bits, G, Pq, D, xs.data(), D, kc.data() + bh * Pq * rb, kp.data() + bh * Pq / G * 2 * D, nullptr, 0};
    longctx_kivi_quant_params c{bits, G, Pq, D, vs.data(), D, vc.data() + bh * Pq * rb, vp.data() + bh * Pq * 2 * (D / G), nullptr, 0};
    CHECK(ctx, longctx_kivi_quantize_keys(&a) == LONGCTX_OK);
    CHECK(ctx, longctx_kivi_quantize_values(&c) == LONGCTX_OK);
    dk.push_back(OracleKeys(xs, Pq, D, G, bits));
    dv.push_back(OracleValues(vs, Pq, D, G, bits));
  }
  std::vector<float> out(B * S * H * D), prk(B * Hkv * T * D), prv(prk.size());
  longctx_kivi_attention_params p{};
  p.batch = B; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D; p.bits = bits; p.group = G;
  p.query = q.data(); p.key = k.data(); p.value = v.data();
  p.quant_len = Pq; p.key_codes = kc.data(); p.key_params = kp.data(); p.value_codes = vc.data(); p.value_params = vp.data();
  p.residual_len = Rp; p.past_key = Rp ? pk.data() : nullptr; p.past_value = Rp ? pv.data() : nullptr;
  p.present_key = prk.data(); p.present_value = prv.data(); p.output = out.data();
  p.do_rotary = 1; p.cos_cache = cos.data(); p.sin_cache = sin.data(); p.rotary_dim = D; p.max_pos = max_pos;
  char err[256] = "";
  CHECK_MSG(ctx, longctx_kivi_attention(&p, err, sizeof err) == LONGCTX_OK, "%s", err);
  double worst = 0.0, worst_present = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      const int64_t bh = b * Hkv + kvh;
      // oracle keys / values in order: prefix, past residual, new (rotated at Pq + Rp + i)
      std::vector<std::vector<double>> K, V;
      for (int64_t t = 0; t < Pq; ++t) {
        K.emplace_back(dk[bh].begin() + t * D, dk[bh].begin() + (t + 1) * D);
        V.emplace_back(dv[bh].begin() + t * D, dv[bh].begin() + (t + 1) * D);
      }
      for (int64_t t = 0; t < Rp; ++t) {
        K.emplace_back(pk.begin() + (bh * Rp + t) * D, pk.begin() + (bh * Rp + t + 1) * D);
        V.emplace_back(pv.begin() + (bh * Rp + t) * D, pv.begin() + (bh * Rp + t + 1) * D);
      }
      for (int64_t i = 0; i < S; ++i) {
        std::vector<double> kk(k.begin() + ((b * S + i) * Hkv + kvh) * D, k.begin() + ((b * S + i) * Hkv + kvh + 1) * D);
        Rope(kk, cos.data(), sin.data(), half, Pq + Rp + i);
        K.push_back(kk);
        V.emplace_back(v.begin() + ((b * S + i) * Hkv + kvh) * D, v.begin() + ((b * S + i) * Hkv + kvh + 1) * D);
      }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < D; ++j) {
          worst_present = std::max(worst_present, std::fabs(prk[(bh * T + t) * D + j] - K[Pq + t][j]));
          worst_present = std::max(worst_present, std::fabs(prv[(bh * T + t) * D + j] - V[Pq + t][j]));
        }
      for (int64_t i = 0; i < S; ++i)
        for (int64_t g = 0; g < Gh; ++g) {
          const int64_t h = kvh * Gh + g;
          std::vector<double> qq(q.begin() + ((b * S + i) * H + h) * D, q.begin() + ((b * S + i) * H + h + 1) * D);
          Rope(qq, cos.data(), sin.data(), half, Pq + Rp + i);
          const int64_t n = Pq + Rp + i + 1;
          std::vector<double> s(n);
          double mx = -1e300, sum = 0.0;
          for (int64_t t = 0; t < n; ++t) {
            double d = 0.0;
            for (int64_t j = 0; j < D; ++j) d += qq[j] * K[t][j];
            s[t] = d / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, s[t]);
          }
          for (auto& e : s) sum += (e = std::exp(e - mx));
          for (int64_t j = 0; j < D; ++j) {
            double o = 0.0;
            for (int64_t t = 0; t < n; ++t) o += s[t] * V[t][j];
            worst = std::max(worst, std::fabs(o / sum - out[((b * S + i) * H + h) * D + j]));
          }
        }
    }
  CHECK_MSG(ctx, worst <= 1e-4, "bits=%d B=%lld S=%lld Pq=%lld Rp=%lld H=%lld Hkv=%lld D=%lld G=%lld: max |out - oracle| = %g",
            bits, (long long)B, (long long)S, (long long)Pq, (long long)Rp, (long long)H, (long long)Hkv, (long long)D,
            (long long)G, worst);
  CHECK_MSG(ctx, worst_present <= 2e-6, "present residual differs by %g", worst_present);
}

void BadArguments(Ctx& ctx) {
  float x[64] = {};
  uint8_t c[64] = {};
  float prm[64] = {};
  longctx_kivi_quant_params p{3, 32, 32, 64, x, 64, c, prm, nullptr, 0};
  CHECK(ctx, longctx_kivi_quantize_keys(&p) == LONGCTX_INVALID_ARGUMENT);  // 3 bits
  p.bits = 2; p.tokens = 31;
  CHECK(ctx, longctx_kivi_quantize_keys(&p) == LONGCTX_INVALID_ARGUMENT);  // not a whole key group
  p.tokens = 1; p.head_dim = 48;
  CHECK(ctx, longctx_kivi_quantize_values(&p) == LONGCTX_INVALID_ARGUMENT);  // head_dim not a multiple of the group
  longctx_kivi_attention_params a{};
  a.batch = 1; a.seq_len = 1; a.num_heads = 2; a.kv_num_heads = 1; a.head_dim = 64; a.bits = 2; a.group = 32; a.quant_len = 16;
  char err[256] = "";
  CHECK(ctx, longctx_kivi_attention(&a, err, sizeof err) == LONGCTX_INVALID_ARGUMENT);
  CHECK_MSG(ctx, std::strstr(err, "multiple of the group size") != nullptr, "message: %s", err);
  CHECK(ctx, longctx_kivi_attention(nullptr, nullptr, 0) == LONGCTX_INVALID_ARGUMENT);
}

}  // namespace

void KiviTests(Ctx& ctx) {
  for (int bits : {2, 4}) {
    RoundTrip(ctx, bits, 96, 64, 32);
    RoundTrip(ctx, bits, 64, 40, 8);   // head_dim 40: an 8-channel tail on the 16-lane path
    RoundTrip(ctx, bits, 32, 128, 32);
    Attention(ctx, bits, 1, 1, 96, 40);   // decode
    Attention(ctx, bits, 2, 1, 128, 0);   // decode, empty residual, batch 2
    Attention(ctx, bits, 1, 37, 64, 130); // prefill over a prefix and a residual (3 query blocks)
    Attention(ctx, bits, 1, 20, 0, 0);    // first prefill: nothing quantized yet
    Attention(ctx, bits, 1, 1, 4096, 150); // long decode: split over key chunks, merged by log-sum-exp
    Attention(ctx, bits, 1, 5, 992, 1100); // a chunk boundary inside the residual
    // the fused step's edges: recall-public's shape (4 heads over 2, head_dim 32) at decode; a prefix that ends inside a
    // 128-key tile and a residual of 41 keys (not a multiple of the 4-key score block); head_dim 40 (an 8-channel tail
    // on the 16-lane path) with group 8; group 4 (values unpacked row by row); one token, nothing cached; an empty
    // residual after exactly one group; 3 query heads per kv head
    Attention(ctx, bits, 1, 1, 2080, 127, 4, 2, 32, 32);
    Attention(ctx, bits, 1, 1, 160, 40, 8, 2, 32, 32);
    Attention(ctx, bits, 1, 3, 200, 13, 4, 2, 40, 8);
    Attention(ctx, bits, 1, 2, 60, 3, 4, 1, 32, 4);
    Attention(ctx, bits, 1, 1, 0, 0, 4, 2, 32, 32);
    Attention(ctx, bits, 1, 1, 32, 0, 4, 2, 32, 32);
    Attention(ctx, bits, 2, 4, 96, 5, 6, 2, 16, 16);
  }
  BadArguments(ctx);
}

}  // namespace longctx::test
