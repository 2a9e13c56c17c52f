// Sparse prefill "xattn": XAttention (Xu et al. 2025, "XAttention: Block Sparse Attention with Antidiagonal
// Scoring", arXiv 2503.16428, section 2 and xattn_estimate of mit-han-lab/x-attention), block 64, stride s:
//   Q'[u] = concat_j Q[u s + s - 1 - j],  K'[w] = concat_j K[w s + j]    (j < s: one antidiagonal per s x s)
//   A' = softmax(Q' K'^T / (sqrt(d) s) + causal over u, w)
//   score[query block][key block] = sum of A' over the block's (64/s) x (64/s) entries (and the G heads)
//   each query block keeps the fewest key blocks, by descending score, whose score reaches
//   `threshold` x its total mass, always with the first key block and the diagonal block(s).
// Estimation costs about 1/(2s) of the dense block's multiply-adds.
#include "la_sparse.h"

namespace longctx::la {

void BuildXattnBlock(const Plan& plan, const Table& table, int64_t b, int64_t kvh, int64_t block, float threshold,
                     int64_t stride, KeySet* out) {
  const longctx_la_params& p = *plan.p;
  const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
  const int64_t D = plan.D, G = plan.G, S = p.seq_len, total = bi.total, Ds = D * stride;
  const int64_t i0 = block * kSparseBlock, i1 = std::min(S, i0 + kSparseBlock);
  const int64_t c0 = bi.past + i0, c1 = bi.past + i1;
  const int64_t U = (i1 - i0 + stride - 1) / stride, M = G * U;
  const int64_t W = (c1 + stride - 1) / stride;  // reshaped keys up to the last causal key
  const int64_t nkb = (c1 + kBlockK - 1) / kBlockK;

  // Q'[g * U + u] = rows i0 + u s + s - 1 - j (j < s) of head g, zero past the block.
  std::vector<float> q(static_cast<size_t>(M * Ds), 0.f), row(static_cast<size_t>(D));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t u = 0; u < U; ++u)
      for (int64_t j = 0; j < stride; ++j) {
        const int64_t i = i0 + u * stride + stride - 1 - j;
        if (i >= i1) continue;
        LoadQueryRow(plan, b, kvh * G + g, i, row.data());
        float* dst = q.data() + (g * U + u) * Ds + j * D;
        for (int64_t d = 0; d < D; ++d) dst[d] = row[static_cast<size_t>(d)] / static_cast<float>(stride);
      }

  // Scores of every reshaped row against every reshaped key, then a causal softmax per row.
  std::vector<float> sc(static_cast<size_t>(M * W)), k(static_cast<size_t>(kBlockK * Ds)), s(static_cast<size_t>(M * kBlockK));
  std::vector<float> kt(static_cast<size_t>(Ds * kBlockK));
  for (int64_t w0 = 0; w0 < W; w0 += kBlockK) {
    const int64_t bw = std::min(kBlockK, W - w0);
    LoadKeyRows(plan, b, kvh, w0 * stride, bw * stride, total, k.data());
    table.qk(q.data(), M, Ds, k.data(), bw, s.data(), kt.data());
    for (int64_t r = 0; r < M; ++r) std::memcpy(sc.data() + r * W + w0, s.data() + r * kBlockK, sizeof(float) * bw);
  }
  std::vector<double> mass(static_cast<size_t>(nkb), 0.0);
  const int64_t per_block = kBlockK / stride;  // reshaped keys per key block
  double all = 0.0;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t u = r % U;
    const int64_t wn = std::min(W, (c0 + u * stride + stride - 1) / stride + 1);  // w s <= last query of the group
    float* x = sc.data() + r * W;
    float mx = -INFINITY;
    for (int64_t w = 0; w < wn; ++w) mx = std::max(mx, x[w]);
    float sum = 0.f;
    for (int64_t w = 0; w < wn; ++w) sum += (x[w] = std::exp(x[w] - mx));
    const float inv = 1.f / sum;
    for (int64_t w0 = 0; w0 < wn; w0 += per_block) {
      float acc = 0.f;
      for (int64_t w = w0; w < std::min(wn, w0 + per_block); ++w) acc += x[w];
      mass[static_cast<size_t>(w0 / per_block)] += acc * inv;
    }
    all += 1.0;
  }

  // The fewest key blocks reaching threshold x the mass: forced ones first, then by descending score.
  std::vector<char> keep(static_cast<size_t>(nkb), 0);
  double got = 0.0;
  auto take = [&](int64_t kb) {
    if (kb < 0 || kb >= nkb || keep[static_cast<size_t>(kb)]) return;
    keep[static_cast<size_t>(kb)] = 1;
    got += mass[static_cast<size_t>(kb)];
  };
  take(0);
  for (int64_t kb = c0 / kBlockK; kb <= (c1 - 1) / kBlockK; ++kb) take(kb);
  std::vector<int64_t> order(static_cast<size_t>(nkb));
  for (int64_t kb = 0; kb < nkb; ++kb) order[static_cast<size_t>(kb)] = kb;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t c) { return mass[static_cast<size_t>(a)] > mass[static_cast<size_t>(c)]; });
  for (const int64_t kb : order) {
    if (got >= static_cast<double>(threshold) * all) break;
    take(kb);
  }
  out->ranges.clear();
  out->cols.clear();
  for (int64_t kb = 0; kb < nkb; ++kb)
    if (keep[static_cast<size_t>(kb)]) AppendRange(out->ranges, kb * kBlockK, std::min(c1, (kb + 1) * kBlockK));
}

}  // namespace longctx::la
