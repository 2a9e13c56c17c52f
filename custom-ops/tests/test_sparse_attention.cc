// Native tests of the sparse prefill patterns (trishape, vslash, xattn; issue 10):
//   * every pattern equals a masked dense reference (double) built from the index the library selected
//     (longctx_la_sparse_mask), with small budgets and with budgets that select every key (== dense);
//   * the estimators find a planted vertical column, a planted diagonal and a planted key block;
//   * the length gate and a budget larger than the sequence run dense, and say so in the stats;
//   * per-KV-head settings (longctx_la_params.heads): heads with different patterns, dense heads among them, equal the
//     masked reference of each head's index, also with a past, with key splits and for decode (all heads gated).
// Run once per ISA path by main.cc (kPerIsa).
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "longctx/long_attention.h"
#include "tests.h"
#include "thread_pool.h"

namespace {

using longctx::test::Ctx;
using longctx::test::ThreadPool;

struct SparseCase {
  std::string name;
  longctx_la_pattern pattern = LONGCTX_LA_VSLASH;
  int64_t S = 256, H = 4, Hkv = 2, D = 32, past = 0;
  bool rotary = true;
  longctx_la_sparse sparse{/*min_len*/ 0, /*vertical*/ 8, /*slash*/ 8, /*threshold*/ 0.5f, /*stride*/ 8, /*last*/ 16,
                           /*local_blocks*/ 2, /*vert_stride*/ 3};
  int64_t sink = 4, window = 32;
  std::vector<longctx_la_head> heads;  // per-kv-head settings (size Hkv), or empty: the layer's for every head
  // Which way the call must go: 's'parse, 'g'ated or 'c'overed.
  char expect = 's';
  // Edits the random q [S][H][D], k and v [total][Hkv][D] (past rows first) before the call.
  std::function<void(std::vector<float>&, std::vector<float>&, std::vector<float>&)> plant;
};

struct SparseRun {
  std::vector<float> out;        // [S][H][D]
  std::vector<uint8_t> mask;     // [Hkv][S][total]
  longctx_la_stats stats{};
  double max_err = 0;            // against the masked reference
  bool ok = false;
};

// KV heads that run a sparse pattern (not dense) in case c.
int64_t SparseHeads(const SparseCase& c) {
  if (c.heads.empty()) return c.Hkv;
  int64_t n = 0;
  for (const longctx_la_head& h : c.heads) n += h.pattern != LONGCTX_LA_DENSE;
  return n;
}

SparseRun RunSparse(Ctx& ctx, const SparseCase& c, ThreadPool* pool) {
  SparseRun run;
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  std::normal_distribution<float> N(0.f, 1.f);
  const int64_t S = c.S, H = c.H, Hkv = c.Hkv, D = c.D, total = c.past + S, G = H / Hkv;
  auto rnd = [&](int64_t n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) e = N(rng);
    return x;
  };
  std::vector<float> q = rnd(S * H * D), k = rnd(total * Hkv * D), v = rnd(total * Hkv * D);
  if (c.plant) c.plant(q, k, v);
  // Split k/v into the past buffer [Hkv][past][D] and the new tokens [S][Hkv][D].
  std::vector<float> pk(static_cast<size_t>(Hkv * c.past * D)), pv(pk.size());
  std::vector<float> nk(static_cast<size_t>(S * Hkv * D)), nv(nk.size());
  for (int64_t j = 0; j < total; ++j)
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const size_t src = static_cast<size_t>((j * Hkv + h) * D + d);
        if (j < c.past) {
          pk[static_cast<size_t>((h * c.past + j) * D + d)] = k[src];
          pv[static_cast<size_t>((h * c.past + j) * D + d)] = v[src];
        } else {
          nk[static_cast<size_t>(((j - c.past) * Hkv + h) * D + d)] = k[src];
          nv[static_cast<size_t>(((j - c.past) * Hkv + h) * D + d)] = v[src];
        }
      }
  const int64_t half = D / 2, max_pos = total + 1;
  std::vector<float> cs(static_cast<size_t>(max_pos * half)), sn(cs.size());
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double th = p * std::pow(10000.0, -2.0 * i / D);
      cs[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(th));
      sn[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(th));
    }
  std::vector<int32_t> seqlens{static_cast<int32_t>(total - 1)};
  std::vector<float> prk(static_cast<size_t>(Hkv * total * D)), prv(prk.size());
  run.out.assign(static_cast<size_t>(S * H * D), 0.f);

  longctx_la_params p{};
  p.dtype = LONGCTX_F32;
  p.batch = 1; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D;
  p.query = q.data(); p.key = nk.data(); p.value = nv.data();
  p.past_key = c.past > 0 ? pk.data() : nullptr; p.past_value = c.past > 0 ? pv.data() : nullptr; p.past_len = c.past;
  p.present_key = prk.data(); p.present_value = prv.data(); p.present_len = total;
  p.seqlens_k = seqlens.data(); p.output = run.out.data();
  p.do_rotary = c.rotary; p.cos_cache = cs.data(); p.sin_cache = sn.data(); p.rotary_dim = D; p.max_pos = max_pos;
  p.pattern = c.pattern; p.sink = c.sink; p.window = c.window; p.sparse = c.sparse; p.isa_override = -1;
  p.stats = &run.stats;
  p.heads = c.heads.empty() ? nullptr : c.heads.data();
  if (pool) { p.parallel_for = &ThreadPool::ParallelFor; p.executor = pool; p.num_threads_hint = pool->size(); }

  char err[512] = {0};
  run.mask.assign(static_cast<size_t>(Hkv * S * total), 0);
  longctx_status rc = longctx_la_sparse_mask(&p, run.mask.data(), err, sizeof err);
  CHECK_MSG(ctx, rc == LONGCTX_OK, "%s: mask error: %s", c.name.c_str(), err);
  rc = longctx_long_attention(&p, err, sizeof err);
  CHECK_MSG(ctx, rc == LONGCTX_OK, "%s: kernel error: %s", c.name.c_str(), err);
  if (rc != LONGCTX_OK) return run;
  const longctx_la_stats& st = run.stats;
  const int64_t nsparse = SparseHeads(c);
  const int64_t want_sparse = c.expect == 's' ? nsparse : 0, want_gated = c.expect == 'g' ? nsparse : 0;
  const int64_t want_covered = c.expect == 'c' ? nsparse : 0;
  CHECK_MSG(ctx, st.sparse_heads == want_sparse && st.gated_heads == want_gated && st.covered_heads == want_covered,
            "%s: sparse/gated/covered heads %lld/%lld/%lld, expected '%c'", c.name.c_str(),
            static_cast<long long>(st.sparse_heads), static_cast<long long>(st.gated_heads),
            static_cast<long long>(st.covered_heads), c.expect);

  // Reference in double: keys and values as cached (present, rotated), the query rotated at past + i,
  // softmax over the keys the mask selects.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t kvh = h / G;
    for (int64_t i = 0; i < S; ++i) {
      const int64_t pos = c.past + i;
      std::vector<double> qr(static_cast<size_t>(D));
      for (int64_t d = 0; d < D; ++d) qr[static_cast<size_t>(d)] = q[static_cast<size_t>((i * H + h) * D + d)];
      if (c.rotary)
        for (int64_t t = 0; t < half; ++t) {
          const double a = qr[static_cast<size_t>(t)], b = qr[static_cast<size_t>(t + half)];
          const double co = cs[static_cast<size_t>(pos * half + t)], si = sn[static_cast<size_t>(pos * half + t)];
          qr[static_cast<size_t>(t)] = a * co - b * si;
          qr[static_cast<size_t>(t + half)] = b * co + a * si;
        }
      const uint8_t* m = run.mask.data() + (kvh * S + i) * total;
      std::vector<double> w(static_cast<size_t>(total), 0.0);
      double mx = -INFINITY, sum = 0.0;
      for (int64_t j = 0; j < total; ++j) {
        if (!m[j]) continue;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qr[static_cast<size_t>(d)] * prk[static_cast<size_t>((kvh * total + j) * D + d)];
        w[static_cast<size_t>(j)] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      for (int64_t j = 0; j < total; ++j)
        if (m[j]) sum += (w[static_cast<size_t>(j)] = std::exp(w[static_cast<size_t>(j)] - mx));
      for (int64_t d = 0; d < D; ++d) {
        double o = 0;
        for (int64_t j = 0; j < total; ++j)
          if (m[j]) o += w[static_cast<size_t>(j)] * prv[static_cast<size_t>((kvh * total + j) * D + d)];
        run.max_err = std::max(run.max_err, std::fabs(o / sum - run.out[static_cast<size_t>((i * H + h) * D + d)]));
      }
    }
  }
  run.ok = true;
  return run;
}

int64_t Selected(const SparseRun& r) {
  int64_t n = 0;
  for (const uint8_t x : r.mask) n += x;
  return n;
}

// Selected keys of the kv heads that run sparse (the stats count only those).
int64_t SelectedSparse(const SparseCase& c, const SparseRun& r) {
  if (c.heads.empty()) return Selected(r);
  const size_t per = r.mask.size() / static_cast<size_t>(c.Hkv);
  int64_t n = 0;
  for (size_t h = 0; h < c.heads.size(); ++h)
    if (c.heads[h].pattern != LONGCTX_LA_DENSE)
      for (size_t i = h * per; i < (h + 1) * per; ++i) n += r.mask[i];
  return n;
}

void CheckMatchesReference(Ctx& ctx, const SparseCase& c, ThreadPool* pool, double tol, bool want_all) {
  const SparseRun r = RunSparse(ctx, c, pool);
  if (!r.ok) return;
  CHECK_MSG(ctx, r.max_err <= tol, "%s: max |out - masked reference| = %.3g > %.1g", c.name.c_str(), r.max_err, tol);
  const int64_t causal = c.Hkv * (c.S * c.past + c.S * (c.S + 1) / 2);
  if (want_all) {
    CHECK_MSG(ctx, Selected(r) == causal, "%s: %lld selected, %lld causal", c.name.c_str(),
              static_cast<long long>(Selected(r)), static_cast<long long>(causal));
  } else {
    CHECK_MSG(ctx, Selected(r) < causal, "%s: a small budget selected every causal key", c.name.c_str());
  }
  if (c.expect == 's')
    CHECK_MSG(ctx, r.stats.keys_selected == SelectedSparse(c, r) && r.stats.keys_causal == causal / c.Hkv * SparseHeads(c),
              "%s: stats.keys_selected %lld (causal %lld), mask %lld", c.name.c_str(),
              static_cast<long long>(r.stats.keys_selected), static_cast<long long>(r.stats.keys_causal),
              static_cast<long long>(SelectedSparse(c, r)));
}

// Planted structure: all queries share a direction u; key `col` is 4u (a vertical line), or key j is
// 3 q_(j + d) (a diagonal at offset d), or the keys of block `kb` are 2u (a bright key block). No RoPE.
void PlantedEstimates(Ctx& ctx, ThreadPool* pool) {
  const int64_t S = 512, H = 2, Hkv = 1, D = 32, col = 200, diag = 150, kb = 3;
  std::vector<float> u(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) u[static_cast<size_t>(d)] = (d % 3 == 0 ? 1.f : -0.5f);
  auto shared_dir = [&](std::vector<float>& q) {
    for (size_t i = 0; i < q.size(); ++i) q[i] = 0.3f * q[i] + 0.8f * u[i % static_cast<size_t>(D)];
  };

  SparseCase vc;
  vc.name = "vslash_planted_vertical";
  vc.S = S; vc.H = H; vc.Hkv = Hkv; vc.D = D; vc.rotary = false;
  vc.sparse.vertical = 1; vc.sparse.slash = 0;
  vc.plant = [&](std::vector<float>& q, std::vector<float>& k, std::vector<float>&) {
    shared_dir(q);
    for (int64_t d = 0; d < D; ++d) k[static_cast<size_t>(col * D + d)] = 4.f * u[static_cast<size_t>(d)];
  };
  SparseRun r = RunSparse(ctx, vc, pool);
  bool found = r.ok;
  for (int64_t i = col; i < S && found; ++i) found = r.mask[static_cast<size_t>(i * S + col)] == 1;
  CHECK_MSG(ctx, found, "vslash did not keep the planted column %lld for every row >= it", static_cast<long long>(col));

  SparseCase dc = vc;
  dc.name = "vslash_planted_diagonal";
  dc.sparse.vertical = 0; dc.sparse.slash = 1;
  dc.plant = [&](std::vector<float>& q, std::vector<float>& k, std::vector<float>&) {
    for (int64_t j = 0; j + diag < S; ++j)
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t d = 0; d < D; ++d)
          k[static_cast<size_t>((j * Hkv + h) * D + d)] = 3.f * q[static_cast<size_t>(((j + diag) * H + h * (H / Hkv)) * D + d)];
  };
  r = RunSparse(ctx, dc, pool);
  found = r.ok;
  for (int64_t i = diag; i < S && found; ++i) found = r.mask[static_cast<size_t>(i * S + i - diag)] == 1;
  CHECK_MSG(ctx, found, "vslash did not keep the planted diagonal q - k = %lld", static_cast<long long>(diag));

  SparseCase xc = vc;
  xc.name = "xattn_planted_block";
  xc.pattern = LONGCTX_LA_XATTN;
  xc.sparse.threshold = 0.6f;
  xc.plant = [&](std::vector<float>& q, std::vector<float>& k, std::vector<float>&) {
    shared_dir(q);
    for (int64_t j = kb * 64; j < (kb + 1) * 64; ++j)
      for (int64_t d = 0; d < D; ++d) k[static_cast<size_t>(j * D + d)] = 2.f * u[static_cast<size_t>(d)];
  };
  r = RunSparse(ctx, xc, pool);
  found = r.ok;
  for (int64_t i = (kb + 1) * 64; i < S && found; ++i) found = r.mask[static_cast<size_t>(i * S + kb * 64 + 5)] == 1;
  CHECK_MSG(ctx, found, "xattn did not keep the planted key block %lld", static_cast<long long>(kb));
  CHECK_MSG(ctx, r.ok && Selected(r) < S * (S + 1) / 2, "xattn at threshold 0.6 kept every block");
}

}  // namespace

namespace longctx::test {

void SparseAttentionTests(Ctx& ctx) {
  ThreadPool pool(3);
  // Small budgets: equal to the masked reference of the selected index.
  SparseCase vs;
  vs.name = "vslash_small";
  vs.S = 448; vs.sparse.vertical = 4; vs.sparse.slash = 2;
  CheckMatchesReference(ctx, vs, &pool, 2e-5, false);
  SparseCase vsp = vs;
  vsp.name = "vslash_small_chunk_with_past"; vsp.past = 70; vsp.S = 200; vsp.H = 8;
  CheckMatchesReference(ctx, vsp, nullptr, 2e-5, false);
  SparseCase xa;
  xa.name = "xattn_small";
  xa.pattern = LONGCTX_LA_XATTN; xa.S = 448; xa.sparse.threshold = 0.5f; xa.sparse.stride = 16;
  CheckMatchesReference(ctx, xa, &pool, 2e-5, false);
  SparseCase tri;
  tri.name = "trishape_small";
  tri.pattern = LONGCTX_LA_TRISHAPE; tri.S = 300; tri.sink = 5; tri.window = 40; tri.sparse.last = 37;
  CheckMatchesReference(ctx, tri, &pool, 2e-5, false);

  // Few work items: the driver splits the keys of each query tile over threads (log-sum-exp merge).
  SparseCase split = vs;
  split.name = "vslash_key_split"; split.H = 2; split.Hkv = 1; split.past = 600; split.S = 128;
  CheckMatchesReference(ctx, split, &pool, 2e-5, false);
  SparseCase xsplit = xa;
  xsplit.name = "xattn_key_split"; xsplit.H = 2; xsplit.Hkv = 1; xsplit.past = 600; xsplit.S = 128;
  CheckMatchesReference(ctx, xsplit, &pool, 2e-5, false);

  SparseCase blk;
  blk.name = "block_local2_stride3_chunk_with_past";
  blk.pattern = LONGCTX_LA_BLOCK; blk.past = 100; blk.S = 400;
  CheckMatchesReference(ctx, blk, &pool, 2e-5, false);

  // Budgets that select every key (but are not larger than the sequence): the sparse walk == dense.
  SparseCase va = vs;
  va.name = "vslash_all_columns"; va.sparse.vertical = va.S - 30; va.sparse.slash = 0;
  CheckMatchesReference(ctx, va, &pool, 1e-5, true);
  SparseCase vd = vs;
  vd.name = "vslash_all_diagonals"; vd.sparse.vertical = 0; vd.sparse.slash = vd.S - 100;
  CheckMatchesReference(ctx, vd, &pool, 1e-5, true);
  SparseCase xall = xa;
  xall.name = "xattn_threshold_1"; xall.sparse.threshold = 1.f;
  CheckMatchesReference(ctx, xall, &pool, 1e-5, true);
  SparseCase ball = blk;
  ball.name = "block_vert_stride_1"; ball.sparse.vert_stride = 1;  // every key block
  CheckMatchesReference(ctx, ball, &pool, 1e-5, true);
  SparseCase tall = tri;
  tall.name = "trishape_all_rows_dense"; tall.sparse.last = tall.S;
  CheckMatchesReference(ctx, tall, &pool, 1e-5, true);

  // Length gate: fewer tokens than min_len, or fewer rows than one estimation block, run dense.
  SparseCase gate = vs;
  gate.name = "vslash_below_min_len"; gate.sparse.min_len = gate.S + 1; gate.expect = 'g';
  CheckMatchesReference(ctx, gate, &pool, 1e-5, true);
  SparseCase dec = vs;
  dec.name = "vslash_decode_dense"; dec.past = 300; dec.S = 1; dec.expect = 'g';
  CheckMatchesReference(ctx, dec, &pool, 1e-5, true);
  // Bad input (issue 10): a budget larger than the sequence runs dense and says so (covered).
  SparseCase big = vs;
  big.name = "vslash_budget_over_sequence"; big.sparse.vertical = 100000; big.expect = 'c';
  CheckMatchesReference(ctx, big, &pool, 1e-5, true);
  SparseCase tbig = tri;
  tbig.name = "trishape_window_over_sequence"; tbig.window = 100000; tbig.expect = 'c';
  CheckMatchesReference(ctx, tbig, &pool, 1e-5, true);

  // Per-KV-head settings: four different heads (one dense), then with a past, with key splits, and decode.
  auto head = [](longctx_la_pattern pat, const longctx_la_sparse& sp, int64_t sink, int64_t window) {
    return longctx_la_head{pat, sink, window, sp};
  };
  longctx_la_sparse hv = vs.sparse, hx = xa.sparse, ht = tri.sparse;
  hv.vertical = 4; hv.slash = 2; hx.threshold = 0.5f; hx.stride = 16; ht.last = 37;
  SparseCase mixed = vs;
  mixed.name = "per_head_vslash_xattn_trishape_dense"; mixed.H = 8; mixed.Hkv = 4;
  mixed.heads = {head(LONGCTX_LA_VSLASH, hv, 0, 1), head(LONGCTX_LA_XATTN, hx, 0, 1), head(LONGCTX_LA_TRISHAPE, ht, 5, 40),
                 head(LONGCTX_LA_DENSE, hv, 0, 1)};
  CheckMatchesReference(ctx, mixed, &pool, 2e-5, false);
  SparseCase mpast = mixed;
  mpast.name = "per_head_chunk_with_past"; mpast.past = 70; mpast.S = 200;
  CheckMatchesReference(ctx, mpast, nullptr, 2e-5, false);
  SparseCase msplit = vs;
  msplit.name = "per_head_key_split"; msplit.H = 4; msplit.Hkv = 2; msplit.past = 600; msplit.S = 128;
  msplit.heads = {head(LONGCTX_LA_BLOCK, blk.sparse, 0, 1), head(LONGCTX_LA_XATTN, hx, 0, 1)};
  CheckMatchesReference(ctx, msplit, &pool, 2e-5, false);
  SparseCase mdec = mixed;
  mdec.name = "per_head_decode_dense"; mdec.past = 300; mdec.S = 1; mdec.expect = 'g';
  CheckMatchesReference(ctx, mdec, &pool, 1e-5, true);

  PlantedEstimates(ctx, &pool);
}

}  // namespace longctx::test
