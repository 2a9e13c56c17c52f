// The reference attention (the oracle) against an independent naive implementation: an explicit
// visibility mask, long-double softmax over the full score row. Also: layout (stride) invariance,
// the LSE output, known answers, empty rows and argument errors.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "longctx/attention_reference.h"
#include "tests.h"

namespace longctx::test {
namespace {

struct Case {
  int64_t B, Hq, Hkv, S, T, D, offset;
  int causal;
  int64_t window;
  float scale;
};

struct Data {
  std::vector<float> q, k, v;  // contiguous [B, H, len, D]
};

Data Random(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.5f, 1.5f);
  Data d;
  d.q.resize(c.B * c.Hq * c.S * c.D);
  d.k.resize(c.B * c.Hkv * c.T * c.D);
  d.v.resize(c.B * c.Hkv * c.T * c.D);
  for (auto* x : {&d.q, &d.k, &d.v}) for (float& f : *x) f = u(rng);
  return d;
}

// Naive oracle: mask by definition, then softmax in long double over the visible keys.
void Naive(const Case& c, const Data& d, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(c.B * c.Hq * c.S * c.D, 0.0);
  lse.assign(c.B * c.Hq * c.S, -INFINITY);
  const long double scale = c.scale != 0.0f ? c.scale : 1.0L / std::sqrt(static_cast<long double>(c.D));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h) {
      const int64_t kvh = h * c.Hkv / c.Hq;
      for (int64_t i = 0; i < c.S; ++i) {
        const int64_t p = c.offset + i;
        std::vector<long double> s(c.T);
        std::vector<bool> visible(c.T);
        long double mx = -INFINITY;
        for (int64_t j = 0; j < c.T; ++j) {
          visible[j] = (!c.causal || j <= p) && (c.window <= 0 || j > p - c.window);
          if (!visible[j]) continue;
          long double dot = 0;
          for (int64_t e = 0; e < c.D; ++e)
            dot += static_cast<long double>(d.q[((b * c.Hq + h) * c.S + i) * c.D + e]) *
                   d.k[((b * c.Hkv + kvh) * c.T + j) * c.D + e];
          s[j] = dot * scale;
          if (s[j] > mx) mx = s[j];
        }
        if (mx == -INFINITY) continue;
        long double sum = 0;
        for (int64_t j = 0; j < c.T; ++j) if (visible[j]) sum += std::exp(s[j] - mx);
        for (int64_t e = 0; e < c.D; ++e) {
          long double acc = 0;
          for (int64_t j = 0; j < c.T; ++j)
            if (visible[j]) acc += std::exp(s[j] - mx) / sum * d.v[((b * c.Hkv + kvh) * c.T + j) * c.D + e];
          out[((b * c.Hq + h) * c.S + i) * c.D + e] = static_cast<double>(acc);
        }
        lse[(b * c.Hq + h) * c.S + i] = static_cast<double>(mx + std::log(sum));
      }
    }
}

// Params for contiguous [B, H, len, D] tensors (BHSD), output and LSE included.
longctx_attention_reference_params Bhsd(const Case& c, const Data& d, float* out, float* lse) {
  longctx_attention_reference_params p{};
  p.batch = c.B, p.q_heads = c.Hq, p.kv_heads = c.Hkv, p.q_len = c.S, p.kv_len = c.T, p.head_dim = c.D;
  p.q_offset = c.offset, p.scale = c.scale, p.causal = c.causal, p.local_window = c.window;
  p.q = d.q.data(), p.q_stride_b = c.Hq * c.S * c.D, p.q_stride_h = c.S * c.D, p.q_stride_s = c.D;
  p.k = d.k.data(), p.k_stride_b = c.Hkv * c.T * c.D, p.k_stride_h = c.T * c.D, p.k_stride_s = c.D;
  p.v = d.v.data(), p.v_stride_b = c.Hkv * c.T * c.D, p.v_stride_h = c.T * c.D, p.v_stride_s = c.D;
  p.out = out, p.out_stride_b = c.Hq * c.S * c.D, p.out_stride_h = c.S * c.D, p.out_stride_s = c.D;
  p.lse = lse, p.lse_stride_b = c.Hq * c.S, p.lse_stride_h = c.S;
  return p;
}

void AgainstNaive(Ctx& ctx, const Case& c, uint32_t seed) {
  const Data d = Random(c, seed);
  std::vector<double> want, want_lse;
  Naive(c, d, want, want_lse);
  std::vector<float> out(want.size(), 7.0f), lse(want_lse.size(), 7.0f);
  auto p = Bhsd(c, d, out.data(), lse.data());
  CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_OK);
  double worst = 0, worst_lse = 0;
  for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]) / std::max(1.0, std::fabs(want[i])));
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(want_lse[i])) {
      CHECK(ctx, std::isinf(lse[i]) && lse[i] < 0);
      continue;
    }
    worst_lse = std::max(worst_lse, std::fabs(lse[i] - want_lse[i]) / std::max(1.0, std::fabs(want_lse[i])));
  }
  // One float rounding of a double result: within a few float ulps (2^-23 ~ 1.2e-7).
  CHECK_MSG(ctx, worst < 5e-7, "B%lld Hq%lld Hkv%lld S%lld T%lld D%lld off%lld causal%d win%lld: out rel err %.3g",
            (long long)c.B, (long long)c.Hq, (long long)c.Hkv, (long long)c.S, (long long)c.T, (long long)c.D,
            (long long)c.offset, c.causal, (long long)c.window, worst);
  CHECK_MSG(ctx, worst_lse < 5e-7, "lse rel err %.3g", worst_lse);

  // Same data in the ORT layout (query/output [B, S, H*D]) gives bit-identical results.
  std::vector<float> q_bshd(d.q.size()), out_bshd(out.size());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.S; ++i)
        for (int64_t e = 0; e < c.D; ++e)
          q_bshd[((b * c.S + i) * c.Hq + h) * c.D + e] = d.q[((b * c.Hq + h) * c.S + i) * c.D + e];
  auto p2 = Bhsd(c, d, out_bshd.data(), nullptr);
  p2.q = q_bshd.data(), p2.q_stride_b = c.S * c.Hq * c.D, p2.q_stride_h = c.D, p2.q_stride_s = c.Hq * c.D;
  p2.out_stride_b = c.S * c.Hq * c.D, p2.out_stride_h = c.D, p2.out_stride_s = c.Hq * c.D;
  CHECK(ctx, longctx_attention_reference(&p2) == LONGCTX_OK);
  bool same = true;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.S; ++i)
        for (int64_t e = 0; e < c.D; ++e)
          same &= out_bshd[((b * c.S + i) * c.Hq + h) * c.D + e] == out[((b * c.Hq + h) * c.S + i) * c.D + e];
  CHECK(ctx, same);
}

}  // namespace

void AttentionReferenceTests(Ctx& ctx) {
  // B, Hq, Hkv, S, T, D, offset, causal, window, scale
  const Case cases[] = {
      {1, 2, 2, 7, 7, 16, 0, 1, -1, 0.0f},     // MHA prefill
      {2, 4, 2, 7, 7, 32, 0, 1, -1, 0.2f},     // GQA prefill
      {2, 4, 2, 1, 10, 16, 9, 1, -1, 0.0f},    // decode
      {1, 6, 2, 3, 8, 17, 5, 1, -1, 0.0f},     // chunk with past, odd D, group 3
      {1, 4, 2, 7, 7, 16, 0, 1, 3, 0.0f},      // local window
      {1, 4, 1, 1, 13, 3, 12, 1, 4, 0.0f},     // decode with window, MQA
      {1, 2, 2, 5, 9, 8, 4, 0, -1, 0.0f},      // not causal
      {1, 2, 1, 5, 9, 1, 4, 0, 3, 0.5f},       // not causal with window (bounds from below), D 1
      {1, 3, 3, 2, 65, 33, 63, 1, -1, 0.0f},   // longer row, odd D
  };
  uint32_t seed = 11;
  for (const Case& c : cases) AgainstNaive(ctx, c, seed++);

  // Known answer: window 1 + causal: each query sees exactly its own key, so out = v[p] exactly and
  // lse = that single score.
  {
    const Case c{1, 2, 1, 4, 4, 5, 0, 1, 1, 0.0f};
    const Data d = Random(c, 99);
    std::vector<float> out(c.Hq * c.S * c.D), lse(c.Hq * c.S);
    auto p = Bhsd(c, d, out.data(), lse.data());
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_OK);
    bool exact = true;
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.S; ++i)
        for (int64_t e = 0; e < c.D; ++e) exact &= out[(h * c.S + i) * c.D + e] == d.v[i * c.D + e];
    CHECK(ctx, exact);
  }
  // Empty rows: queries past the last key with a window of 1 see nothing: out 0, lse -inf.
  {
    const Case c{1, 1, 1, 2, 3, 4, 3, 1, 1, 0.0f};
    const Data d = Random(c, 5);
    std::vector<float> out(c.S * c.D, 9.0f), lse(c.S, 9.0f);
    auto p = Bhsd(c, d, out.data(), lse.data());
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_OK);
    bool zero = true;
    for (float f : out) zero &= f == 0.0f;
    CHECK(ctx, zero);
    CHECK(ctx, std::isinf(lse[0]) && lse[0] < 0 && std::isinf(lse[1]));
  }
  // Argument errors come back as status codes.
  {
    const Case c{1, 4, 2, 2, 2, 4, 0, 1, -1, 0.0f};
    const Data d = Random(c, 6);
    std::vector<float> out(c.Hq * c.S * c.D);
    CHECK(ctx, longctx_attention_reference(nullptr) == LONGCTX_INVALID_ARGUMENT);
    auto p = Bhsd(c, d, out.data(), nullptr);
    p.kv_heads = 3;
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_INVALID_ARGUMENT);
    p = Bhsd(c, d, out.data(), nullptr);
    p.q = nullptr;
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_INVALID_ARGUMENT);
    p = Bhsd(c, d, out.data(), nullptr);
    p.head_dim = 0;
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_INVALID_ARGUMENT);
    p = Bhsd(c, d, out.data(), nullptr);
    p.q_offset = -1;
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_INVALID_ARGUMENT);
    p = Bhsd(c, d, out.data(), nullptr);
    p.q_len = 0;  // nothing to do
    CHECK(ctx, longctx_attention_reference(&p) == LONGCTX_OK);
  }
}

}  // namespace longctx::test
