// Native tests of the LongAttention kernel (kernels/attention) against a masked dense reference
// computed here in double (scores, mask, softmax), written from the pattern formulas, not from the
// kernel's pattern classes. Run once per ISA path by main.cc (kPerIsa), with that path active.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "longctx/long_attention.h"
#include "tests.h"
#include "thread_pool.h"

namespace {

using longctx::test::Ctx;
using longctx::test::ThreadPool;

uint16_t ToHalf(float f) {  // round to nearest even (reference side, independent of the kernel's)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (a >= 65520.f) return static_cast<uint16_t>(sign | 0x7C00u);
  if (a < 6.103515625e-05f) return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a / 5.9604644775390625e-08f)));
  int e;
  const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  uint32_t man = static_cast<uint32_t>(std::nearbyint((m * 2.f - 1.f) * 1024.f));
  int exp = e - 1 + 15;
  if (man == 1024) { man = 0; ++exp; }
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(exp) << 10 | man);
}
float FromHalf(uint16_t h) {
  const int exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  const float s = (h & 0x8000) ? -1.f : 1.f;
  if (exp == 0) return s * std::ldexp(static_cast<float>(man), -24);
  if (exp == 31) return man ? NAN : s * INFINITY;
  return s * std::ldexp(1.f + man / 1024.f, exp - 15);
}

struct Case {
  std::string name;
  longctx_la_pattern pattern = LONGCTX_LA_DENSE;
  int64_t B = 1, S = 7, H = 4, Hkv = 2, D = 64, past = 0;
  int64_t past_buf = 0;    // past buffer capacity (concat mode), >= past
  int64_t present_cap = 0; // shared mode: buffer capacity (>= past + S); 0 = concat mode
  bool f16 = false, rotary = true, interleaved = false;
  int64_t R = 0;           // 0 => D
  int64_t sink = 4, window = 37, chunk = 48, local = 16, trained = 0;
  float scale = 0.f;
  int isa = -1;  // the active path
  double tol = 2e-5;
};

// What the reference needs to know about positions and parts, from the formulas in the header.
struct RefPattern {
  const Case& c;
  int64_t total;
  bool prerotated() const { return c.pattern == LONGCTX_LA_DENSE; }
  // -1 = masked, otherwise the query variant.
  int part(int64_t q, int64_t k) const {
    if (k > q) return -1;
    if (c.pattern == LONGCTX_LA_STREAMING) return (k < c.sink || k > q - c.window) ? 0 : -1;
    if (c.pattern == LONGCTX_LA_DCA) {
      const int64_t L = c.chunk - c.local, cq = q / L, ck = k / L;
      return ck == cq ? 0 : ck == cq - 1 ? 1 : 2;
    }
    return 0;
  }
  int64_t qpos(int v, int64_t q) const {
    if (c.pattern != LONGCTX_LA_DCA) return q;
    const int64_t L = c.chunk - c.local;
    if (v == 0) return q % L;
    if (v == 1) return std::min(q % L + L, c.chunk);
    return std::min(2 * L - 1, c.chunk);
  }
  int64_t kpos(int64_t k) const { return c.pattern == LONGCTX_LA_DCA ? k % (c.chunk - c.local) : k; }
  double factor() const {
    if (c.pattern != LONGCTX_LA_DCA || c.trained <= 0) return 1.0;
    return std::max(1.0, 0.1 * std::log(static_cast<double>(total) / c.trained) + 1.0);
  }
};

void Rotate(std::vector<double>& x, int64_t R, const std::vector<float>& cs, const std::vector<float>& sn, int64_t pos,
            bool inter) {
  const int64_t h = R / 2;
  for (int64_t i = 0; i < h; ++i) {
    const double c = cs[pos * h + i], s = sn[pos * h + i];
    const int64_t a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + h;
    const double xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xb * c + xa * s;
  }
}


void RunCase(Ctx& ctx, const Case& c, ThreadPool* pool) {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  const int64_t B = c.B, S = c.S, H = c.H, Hkv = c.Hkv, D = c.D, R = c.R ? c.R : c.D;
  const int64_t total = c.past + S;
  const bool shared = c.present_cap > 0;
  const int64_t P = shared ? c.present_cap : std::max(c.past_buf, c.past);
  const int64_t Tp = shared ? c.present_cap : total;
  const int64_t max_pos = total + 64;
  auto rnd = [&](size_t n, float amp) {
    std::vector<float> v(n);
    for (auto& x : v) {
      x = U(rng) * amp;
      if (c.f16) x = FromHalf(ToHalf(x));  // the kernel sees exactly these values
    }
    return v;
  };
  std::vector<float> q = rnd(B * S * H * D, 1.5f), k = rnd(B * S * Hkv * D, 1.5f), v = rnd(B * S * Hkv * D, 1.f);
  std::vector<float> pk = rnd(B * Hkv * P * D, 1.5f), pv = rnd(B * Hkv * P * D, 1.f);
  std::vector<float> cs(max_pos * R / 2), sn(max_pos * R / 2);
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < R / 2; ++i) {
      const double th = p * std::pow(10000.0, -2.0 * i / R);
      cs[p * R / 2 + i] = static_cast<float>(std::cos(th));
      sn[p * R / 2 + i] = static_cast<float>(std::sin(th));
      if (c.f16) {
        cs[p * R / 2 + i] = FromHalf(ToHalf(cs[p * R / 2 + i]));
        sn[p * R / 2 + i] = FromHalf(ToHalf(sn[p * R / 2 + i]));
      }
    }
  std::vector<int32_t> seqlens(B, static_cast<int32_t>(total - 1));

  // Device-side buffers in the I/O dtype.
  const size_t esz = c.f16 ? 2 : 4;
  auto pack = [&](const std::vector<float>& x) {
    std::vector<uint8_t> out(x.size() * esz);
    for (size_t i = 0; i < x.size(); ++i) {
      if (c.f16) {
        const uint16_t h = ToHalf(x[i]);
        std::memcpy(&out[i * 2], &h, 2);
      } else {
        std::memcpy(&out[i * 4], &x[i], 4);
      }
    }
    return out;
  };
  auto unpack = [&](const std::vector<uint8_t>& x) {
    std::vector<float> out(x.size() / esz);
    for (size_t i = 0; i < out.size(); ++i) {
      if (c.f16) {
        uint16_t h;
        std::memcpy(&h, &x[i * 2], 2);
        out[i] = FromHalf(h);
      } else {
        std::memcpy(&out[i], &x[i * 4], 4);
      }
    }
    return out;
  };
  auto bq = pack(q), bk = pack(k), bv = pack(v), bpk = pack(pk), bpv = pack(pv), bcs = pack(cs), bsn = pack(sn);
  std::vector<uint8_t> out(B * S * H * D * esz), prk, prv;
  std::vector<float> lse(B * H * S);
  if (!shared) {
    prk.assign(B * Hkv * Tp * D * esz, 0xAB);  // garbage: the kernel must overwrite every row
    prv.assign(B * Hkv * Tp * D * esz, 0xCD);
  }

  longctx_la_params p{};
  p.dtype = c.f16 ? LONGCTX_F16 : LONGCTX_F32;
  p.batch = B; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D;
  p.query = bq.data(); p.key = bk.data(); p.value = bv.data();
  if (shared) {
    p.past_key = p.present_key = bpk.data();
    p.past_value = p.present_value = bpv.data();
    p.past_len = P;
  } else {
    p.past_key = P > 0 ? bpk.data() : nullptr;
    p.past_value = P > 0 ? bpv.data() : nullptr;
    p.past_len = P > 0 ? P : 0;
    p.present_key = prk.data(); p.present_value = prv.data();
  }
  p.present_len = Tp;
  p.seqlens_k = seqlens.data();
  p.output = out.data();
  p.lse = lse.data();
  p.do_rotary = c.rotary; p.rotary_interleaved = c.interleaved;
  p.cos_cache = bcs.data(); p.sin_cache = bsn.data(); p.rotary_dim = R; p.max_pos = max_pos;
  p.scale = c.scale; p.pattern = c.pattern; p.sink = c.sink; p.window = c.window;
  p.chunk_size = c.chunk; p.local_size = c.local; p.trained_context = c.trained; p.isa_override = c.isa;
  if (pool) { p.parallel_for = &ThreadPool::ParallelFor; p.executor = pool; p.num_threads_hint = pool->size(); }

  char err[512] = {0};
  const longctx_status rc = longctx_long_attention(&p, err, sizeof err);
  CHECK_MSG(ctx, rc == LONGCTX_OK, "%s: kernel error: %s", c.name.c_str(), err);
  if (rc != LONGCTX_OK) return;

  const auto got = unpack(out);
  const auto got_pk = unpack(shared ? bpk : prk), got_pv = unpack(shared ? bpv : prv);
  RefPattern rp{c, total};
  const double scale = (c.scale != 0.f ? c.scale : 1.0 / std::sqrt(static_cast<double>(D))) * rp.factor();
  double max_err = 0, max_lse_err = 0, max_kv_err = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      // keys as cached (raw, or rotated at their position for dense), and as attended (rotated).
      std::vector<std::vector<double>> kc(total), katt(total), vv(total);
      for (int64_t j = 0; j < total; ++j) {
        std::vector<double> kr(D), vr(D);
        for (int64_t d = 0; d < D; ++d) {
          if (j < c.past) {
            kr[d] = pk[((b * Hkv + kvh) * P + j) * D + d];
            vr[d] = pv[((b * Hkv + kvh) * P + j) * D + d];
          } else {
            kr[d] = k[((b * S + j - c.past) * Hkv + kvh) * D + d];
            vr[d] = v[((b * S + j - c.past) * Hkv + kvh) * D + d];
          }
        }
        kc[j] = kr;
        if (c.rotary && rp.prerotated() && j >= c.past) Rotate(kc[j], R, cs, sn, j, c.interleaved);
        katt[j] = kc[j];
        if (c.rotary && !rp.prerotated()) Rotate(katt[j], R, cs, sn, rp.kpos(j), c.interleaved);
        vv[j] = vr;
        for (int64_t d = 0; d < D; ++d) {
          const double ek = got_pk[((b * Hkv + kvh) * Tp + j) * D + d] - kc[j][d];
          const double ev = got_pv[((b * Hkv + kvh) * Tp + j) * D + d] - vr[d];
          max_kv_err = std::max({max_kv_err, std::fabs(ek), std::fabs(ev)});
        }
      }
      if (!shared)
        for (int64_t j = total; j < Tp; ++j)
          for (int64_t d = 0; d < D; ++d)
            max_kv_err = std::max(max_kv_err, std::fabs(double(got_pk[((b * Hkv + kvh) * Tp + j) * D + d])));
      for (int64_t g = 0; g < H / Hkv; ++g) {
        const int64_t h = kvh * (H / Hkv) + g;
        for (int64_t i = 0; i < S; ++i) {
          const int64_t qc = c.past + i;
          std::vector<double> qraw(D);
          for (int64_t d = 0; d < D; ++d) qraw[d] = q[((b * S + i) * H + h) * D + d];
          std::vector<std::vector<double>> qv(3, qraw);
          for (int vi = 0; vi < 3; ++vi)
            if (c.rotary) Rotate(qv[vi], R, cs, sn, rp.qpos(vi, qc), c.interleaved);
          std::vector<double> sc(total, -INFINITY);
          double mx = -INFINITY;
          for (int64_t j = 0; j < total; ++j) {
            const int part = rp.part(qc, j);
            if (part < 0) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qv[part][d] * katt[j][d];
            sc[j] = dot * scale;
            mx = std::max(mx, sc[j]);
          }
          double sum = 0;
          std::vector<double> acc(D, 0.0);
          for (int64_t j = 0; j < total; ++j) {
            if (sc[j] == -INFINITY) continue;
            const double w = std::exp(sc[j] - mx);
            sum += w;
            for (int64_t d = 0; d < D; ++d) acc[d] += w * vv[j][d];
          }
          for (int64_t d = 0; d < D; ++d)
            max_err = std::max(max_err, std::fabs(acc[d] / sum - got[((b * S + i) * H + h) * D + d]));
          max_lse_err = std::max(max_lse_err, std::fabs(mx + std::log(sum) - lse[(b * H + h) * S + i]));
        }
      }
    }
  }
  const double kv_tol = c.f16 ? 2e-3 : 1e-6;
  CHECK_MSG(ctx, max_err <= c.tol, "%s: max|out - ref| = %.3g > %.3g", c.name.c_str(), max_err, c.tol);
  CHECK_MSG(ctx, max_lse_err <= c.tol * 4, "%s: max|lse - ref| = %.3g", c.name.c_str(), max_lse_err);
  CHECK_MSG(ctx, max_kv_err <= kv_tol, "%s: max|present - ref| = %.3g", c.name.c_str(), max_kv_err);
}

// DCA must equal dense exactly (same code path, same positions) when the sequence fits one chunk.
void DcaEqualsDenseInOneChunk(Ctx& ctx, ThreadPool* pool) {
  for (int64_t S : {1, 7, 40}) {
    Case base;
    base.S = S; base.past = S == 1 ? 30 : 0; base.chunk = 64; base.local = 8;  // L = 56 >= total
    std::vector<float> outs[2];
    for (int pi = 0; pi < 2; ++pi) {
      const int64_t total = base.past + S, D = base.D;
      std::mt19937 rng(7);
      std::uniform_real_distribution<float> U(-1.f, 1.f);
      auto rnd = [&](size_t n) { std::vector<float> x(n); for (auto& e : x) e = U(rng); return x; };
      auto q = rnd(S * base.H * D), k = rnd(S * base.Hkv * D), v = rnd(S * base.Hkv * D);
      auto pk = rnd(base.Hkv * base.past * D), pv = rnd(base.Hkv * base.past * D);
      std::vector<float> cs((total + 8) * D / 2), sn(cs.size());
      for (size_t i = 0; i < cs.size(); ++i) { cs[i] = std::cos(0.01f * i); sn[i] = std::sin(0.01f * i); }
      std::vector<float> out(S * base.H * D), prk(base.Hkv * total * D), prv(prk.size());
      int32_t sl = static_cast<int32_t>(total - 1);
      longctx_la_params p{};
      p.dtype = LONGCTX_F32; p.batch = 1; p.seq_len = S; p.num_heads = base.H; p.kv_num_heads = base.Hkv; p.head_dim = D;
      p.query = q.data(); p.key = k.data(); p.value = v.data();
      p.past_key = base.past ? pk.data() : nullptr; p.past_value = base.past ? pv.data() : nullptr; p.past_len = base.past;
      p.present_key = prk.data(); p.present_value = prv.data(); p.present_len = total; p.seqlens_k = &sl;
      p.output = out.data(); p.do_rotary = 0;  // with rotation the caches differ (dense stores rotated keys)
      p.pattern = pi == 0 ? LONGCTX_LA_DENSE : LONGCTX_LA_DCA; p.chunk_size = base.chunk; p.local_size = base.local;
      p.isa_override = -1;
      if (pool) { p.parallel_for = &ThreadPool::ParallelFor; p.executor = pool; p.num_threads_hint = pool->size(); }
      char err[256];
      CHECK_MSG(ctx, longctx_long_attention(&p, err, sizeof err) == 0, "dca==dense: %s", err);
      outs[pi] = out;
    }
    CHECK_MSG(ctx, outs[0] == outs[1], "dca == dense bit-exactly in one chunk (S=%lld)", static_cast<long long>(S));
  }
}

void BadInput(Ctx& ctx) {
  longctx_la_params p{};
  float x[64] = {0};
  int32_t sl = 0;
  p.dtype = LONGCTX_F32; p.batch = 1; p.seq_len = 1; p.num_heads = 1; p.kv_num_heads = 1; p.head_dim = 24; p.isa_override = -1;
  p.query = p.key = p.value = x; p.present_key = p.present_value = x; p.present_len = 1; p.output = x; p.seqlens_k = &sl;
  char err[256] = {0};
  CHECK_MSG(ctx, longctx_long_attention(&p, err, sizeof err) != 0 && std::strstr(err, "head_dim 24") != nullptr,
        "head_dim 24 rejected by name: '%s'", err);
  p.head_dim = 16; p.pattern = LONGCTX_LA_STREAMING; p.window = 0;
  CHECK_MSG(ctx, longctx_long_attention(&p, err, sizeof err) != 0 && std::strstr(err, "window") != nullptr, "window 0: '%s'", err);
  p.pattern = LONGCTX_LA_DCA; p.chunk_size = 8; p.local_size = 8;
  CHECK_MSG(ctx, longctx_long_attention(&p, err, sizeof err) != 0 && std::strstr(err, "chunk_size") != nullptr, "dca local>=chunk: '%s'", err);
  p.pattern = LONGCTX_LA_DENSE; sl = 5;
  CHECK_MSG(ctx, longctx_long_attention(&p, err, sizeof err) != 0 && std::strstr(err, "present length") != nullptr, "seqlens beyond buffer: '%s'", err);
}

}  // namespace

namespace longctx::test {

void LongAttentionTests(Ctx& ctx) {
  ThreadPool pool(3);
  BadInput(ctx);
  int n = 0;
  const longctx_la_pattern pats[] = {LONGCTX_LA_DENSE, LONGCTX_LA_STREAMING, LONGCTX_LA_DCA};
  const char* pnames[] = {"dense", "streaming", "dca"};
  for (int pi = 0; pi < 3; ++pi)
    for (int64_t S : {1, 7, 257})
      for (int ratio : {1, 2, 4})
        for (int64_t past : {0, 70}) {
          Case c;
          c.pattern = pats[pi]; c.S = S; c.past = past;
          c.Hkv = ratio == 4 ? 1 : 2; c.H = c.Hkv * ratio;
          c.D = (n % 3 == 0) ? 32 : (n % 3 == 1) ? 64 : 128;
          c.f16 = (n / 3) % 2 == 1;
          c.tol = c.f16 ? 4e-3 : 2e-5;
          c.present_cap = (n % 2 == 0) ? past + S + 13 : 0;           // shared buffer with spare capacity
          c.past_buf = past > 0 && c.present_cap == 0 ? past + 5 : 0;  // concat: past buffer larger than valid
          c.interleaved = n % 5 == 1;
          c.R = n % 7 == 3 ? c.D / 2 : 0;
          c.trained = pats[pi] == LONGCTX_LA_DCA && n % 2 ? 40 : 0;
          c.B = S == 257 ? 1 : 2;
          c.rotary = n % 11 != 5;
          c.name = std::string(pnames[pi]) + "/S" + std::to_string(S) + "/G" + std::to_string(ratio) + "/P" +
                   std::to_string(past) + "/D" + std::to_string(c.D) + (c.f16 ? "/f16" : "/f32") +
                   (c.present_cap ? "/shared" : "/concat");
          RunCase(ctx, c, n % 4 == 3 ? nullptr : &pool);
          ++n;
        }
  // Decode with a long cache: several key splits merged by log-sum-exp.
  for (int pi = 0; pi < 3; ++pi) {
    Case c;
    c.pattern = pats[pi]; c.S = 1; c.past = 2000; c.H = 8; c.Hkv = 2; c.D = 64;
    c.window = 300; c.chunk = 512; c.local = 64; c.trained = 256; c.present_cap = 4096;
    c.name = std::string(pnames[pi]) + "/decode-split";
    RunCase(ctx, c, &pool);
  }
  DcaEqualsDenseInOneChunk(ctx, &pool);
}

}  // namespace longctx::test
