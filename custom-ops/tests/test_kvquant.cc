// kvquant (longctx/kvquant.h) on the active ISA path against the oracle written here from the header's
// formulas: exact equality (every path computes the same float operations), the error bound
// |dequant(quant(x)) - x| <= scale/2, untouched row padding (masked / tail stores), ties, zero
// channels, empty sizes and argument errors. Sizes are odd on purpose: tails of 8 and 16 lanes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "longctx/kvquant.h"
#include "tests.h"

namespace longctx::test {
namespace {

constexpr int8_t kPadQ = 0x5A;
constexpr float kPadF = 12345.0f;

struct Oracle {
  std::vector<float> absmax, scales, y;
  std::vector<int8_t> q;
};

Oracle Compute(const std::vector<float>& x, int64_t T, int64_t C, int64_t xs) {
  Oracle o;
  o.absmax.assign(C, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) o.absmax[c] = std::max(o.absmax[c], std::fabs(x[t * xs + c]));
  o.scales.resize(C);
  o.q.resize(T * C);
  o.y.resize(T * C);
  for (int64_t c = 0; c < C; ++c) o.scales[c] = o.absmax[c] / 127.0f;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const float inv = o.absmax[c] > 0.0f ? 127.0f / o.absmax[c] : 0.0f;
      const float v = std::min(127.0f, std::max(-127.0f, x[t * xs + c] * inv));
      o.q[t * C + c] = static_cast<int8_t>(std::nearbyint(v));
      o.y[t * C + c] = static_cast<float>(o.q[t * C + c]) * o.scales[c];
    }
  return o;
}

void OneShape(Ctx& ctx, int64_t T, int64_t C, int64_t pad, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t xs = C + pad, qs = C + pad + 3, ys = C + pad + 1;
  std::vector<float> x(T * xs, kPadF);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      // per-channel magnitudes over 6 decades; channel 5 all zero; channel 2 only negative
      const float mag = std::pow(10.0f, static_cast<float>(c % 7) - 3.0f);
      float v = u(rng) * mag;
      if (c == 5) v = 0.0f;
      if (c == 2) v = -std::fabs(v);
      x[t * xs + c] = v;
    }
  const Oracle want = Compute(x, T, C, xs);
  const char* shape_fmt = "T=%lld C=%lld pad=%lld";
#define SHAPE (long long)T, (long long)C, (long long)pad

  std::vector<float> absmax(C + 4, kPadF);
  longctx_kv_absmax_params ap{T, C, x.data(), xs, absmax.data()};
  CHECK(ctx, longctx_kv_absmax(&ap) == LONGCTX_OK);
  CHECK_MSG(ctx, std::memcmp(absmax.data(), want.absmax.data(), C * sizeof(float)) == 0, shape_fmt, SHAPE);
  CHECK(ctx, absmax[C] == kPadF);

  std::vector<int8_t> q(T * qs, kPadQ);
  std::vector<float> scales(C, -1.0f);
  longctx_kv_quantize_params qp{T, C, x.data(), xs, q.data(), qs, scales.data()};
  CHECK(ctx, longctx_kv_quantize_int8(&qp) == LONGCTX_OK);
  CHECK_MSG(ctx, std::memcmp(scales.data(), want.scales.data(), C * sizeof(float)) == 0, shape_fmt, SHAPE);
  bool q_same = true, pad_same = true;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) q_same &= q[t * qs + c] == want.q[t * C + c];
    for (int64_t c = C; c < qs; ++c) pad_same &= q[t * qs + c] == kPadQ;
  }
  CHECK_MSG(ctx, q_same, shape_fmt, SHAPE);
  CHECK_MSG(ctx, pad_same, "quantize wrote into row padding, T=%lld C=%lld pad=%lld", SHAPE);

  std::vector<float> y(T * ys, kPadF);
  longctx_kv_dequantize_params dp{T, C, q.data(), qs, scales.data(), y.data(), ys};
  CHECK(ctx, longctx_kv_dequantize_int8(&dp) == LONGCTX_OK);
  bool y_same = true, y_pad = true, bound = true;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      const float yv = y[t * ys + c];
      y_same &= std::memcmp(&yv, &want.y[t * C + c], sizeof(float)) == 0;
      // rounding to the nearest step: |y - x| <= scale/2, plus float rounding of the products
      bound &= std::fabs(yv - x[t * xs + c]) <= 0.5f * scales[c] * (1.0f + 1e-5f) + 1e-30f;
    }
    for (int64_t c = C; c < ys; ++c) y_pad &= y[t * ys + c] == kPadF;
  }
  CHECK_MSG(ctx, y_same, shape_fmt, SHAPE);
  CHECK_MSG(ctx, y_pad, "dequantize wrote into row padding, T=%lld C=%lld pad=%lld", SHAPE);
  CHECK_MSG(ctx, bound, "error bound, T=%lld C=%lld pad=%lld", SHAPE);
#undef SHAPE
}

}  // namespace

void KvQuantTests(Ctx& ctx) {
  uint32_t seed = 1;
  for (int64_t T : {1, 2, 5, 17, 64})
    for (int64_t C : {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 130})
      for (int64_t pad : {0, 5}) OneShape(ctx, T, C, pad, seed++);

  // Ties round half to even: absmax 127 gives inv 1, so x is its own quantized value.
  {
    const float x[] = {127.0f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 1.5f, -126.5f, 126.5f};
    const int8_t want[] = {127, 2, 4, -2, 0, 0, 2, -126, 126};
    const int64_t C = 1, T = 9;
    int8_t q[9];
    float scale = 0;
    longctx_kv_quantize_params qp{T, C, x, 1, q, 1, &scale};
    CHECK(ctx, longctx_kv_quantize_int8(&qp) == LONGCTX_OK);
    CHECK(ctx, scale == 1.0f);
    CHECK(ctx, std::memcmp(q, want, sizeof q) == 0);
    // the same ties in one row across 9 channels (the SIMD lanes), each channel's absmax set by row 0
    std::vector<float> x2(2 * 9);
    for (int c = 0; c < 9; ++c) x2[c] = 127.0f, x2[9 + c] = x[c];
    std::vector<int8_t> q2(2 * 9);
    std::vector<float> s2(9);
    longctx_kv_quantize_params qp2{2, 9, x2.data(), 9, q2.data(), 9, s2.data()};
    CHECK(ctx, longctx_kv_quantize_int8(&qp2) == LONGCTX_OK);
    CHECK(ctx, std::memcmp(q2.data() + 9, want, 9) == 0);
  }
  // Dequantize covers the whole int8 range, -128 included.
  {
    std::vector<int8_t> q(256);
    for (int i = 0; i < 256; ++i) q[i] = static_cast<int8_t>(i - 128);
    std::vector<float> scales(32), y(256);
    for (int c = 0; c < 32; ++c) scales[c] = 0.01f * (c + 1);
    longctx_kv_dequantize_params dp{8, 32, q.data(), 32, scales.data(), y.data(), 32};
    CHECK(ctx, longctx_kv_dequantize_int8(&dp) == LONGCTX_OK);
    bool ok = true;
    for (int t = 0; t < 8; ++t)
      for (int c = 0; c < 32; ++c) ok &= y[t * 32 + c] == static_cast<float>(q[t * 32 + c]) * scales[c];
    CHECK(ctx, ok);
  }
  // Empty sizes and argument errors.
  {
    float x[4] = {1, 2, 3, 4}, s[2] = {5, 5}, y[4];
    int8_t q[4];
    longctx_kv_quantize_params none{0, 2, nullptr, 2, nullptr, 2, s};
    CHECK(ctx, longctx_kv_quantize_int8(&none) == LONGCTX_OK && s[0] == 0.0f && s[1] == 0.0f);
    longctx_kv_absmax_params no_channels{3, 0, nullptr, 0, nullptr};
    CHECK(ctx, longctx_kv_absmax(&no_channels) == LONGCTX_OK);
    CHECK(ctx, longctx_kv_absmax(nullptr) == LONGCTX_INVALID_ARGUMENT);
    longctx_kv_quantize_params short_stride{2, 2, x, 1, q, 2, s};
    CHECK(ctx, longctx_kv_quantize_int8(&short_stride) == LONGCTX_INVALID_ARGUMENT);
    longctx_kv_quantize_params null_q{2, 2, x, 2, nullptr, 2, s};
    CHECK(ctx, longctx_kv_quantize_int8(&null_q) == LONGCTX_INVALID_ARGUMENT);
    longctx_kv_dequantize_params negative{-1, 2, q, 2, s, y, 2};
    CHECK(ctx, longctx_kv_dequantize_int8(&negative) == LONGCTX_INVALID_ARGUMENT);
    longctx_kv_dequantize_params short_y{2, 2, q, 2, s, y, 1};
    CHECK(ctx, longctx_kv_dequantize_int8(&short_y) == LONGCTX_INVALID_ARGUMENT);
  }
}

}  // namespace longctx::test
