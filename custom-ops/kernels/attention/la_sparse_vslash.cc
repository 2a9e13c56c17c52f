// Sparse prefill "vslash": MInference vertical-slash (Jiang et al. 2024, "MInference 1.0: Accelerating
// Pre-filling for Long-Context LLMs via Dynamic Sparse Attention", arXiv 2407.02490, Alg. 2 and the
// vertical_slash_sparse_attention of microsoft/MInference):
//   A = softmax(Q[-64:] K^T / sqrt(d) + causal)            (the last 64 queries against every key)
//   vertical[k] = sum_rows A[row, k]      slash[d] = sum_rows A[row, k] with q - k = d
//   keep columns k < 30 and diagonals d < 100, plus the top `vertical` columns and top `slash` diagonals
//   of the rest. For each 64-row query block [c0, c1) a diagonal d covers keys [c0 - d, c1 - d): the
//   diagonals become contiguous key ranges (merged), the kept columns outside them are gathered.
// Per kv head: the G query heads' A are summed (la_sparse.h).
#include <chrono>
#include <numeric>

#include "la_sparse.h"

namespace longctx::la {

namespace {
// Indices [from, n) of `score` with the `count` largest scores (ties: lower index), plus [0, from).
std::vector<int64_t> KeepTop(const std::vector<float>& score, int64_t from, int64_t count) {
  const int64_t n = static_cast<int64_t>(score.size());
  std::vector<int64_t> keep(static_cast<size_t>(std::min(from, n)));
  std::iota(keep.begin(), keep.end(), int64_t{0});
  if (from >= n || count <= 0) return keep;
  std::vector<int64_t> rest(static_cast<size_t>(n - from));
  std::iota(rest.begin(), rest.end(), from);
  const int64_t k = std::min<int64_t>(count, static_cast<int64_t>(rest.size()));
  auto better = [&](int64_t a, int64_t b) {
    const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  };
  std::nth_element(rest.begin(), rest.begin() + (k - 1), rest.end(), better);
  keep.insert(keep.end(), rest.begin(), rest.begin() + k);
  return keep;
}
}  // namespace

void BuildVslash(const Plan& plan, const Table& table, int64_t b, int64_t kvh, int64_t vertical, int64_t slash,
                 SparseIndex* out) {
  const longctx_la_params& p = *plan.p;
  const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
  const int64_t D = plan.D, G = plan.G, S = p.seq_len, total = bi.total;
  const int64_t nq = std::min(kVslashLastQ, S), first = S - nq, M = G * nq;

  std::vector<float> q(static_cast<size_t>(M * D)), k(static_cast<size_t>(kBlockK * D));
  std::vector<float> s(static_cast<size_t>(M * kBlockK)), kt(static_cast<size_t>(D * kBlockK));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = 0; r < nq; ++r) LoadQueryRow(plan, b, kvh * G + g, first + r, q.data() + (g * nq + r) * D);

  // Two passes over the keys: row max and sum, then the normalised probabilities into the sums.
  std::vector<float> m(static_cast<size_t>(M), -INFINITY), l(static_cast<size_t>(M), 0.f);
  std::vector<float> vert(static_cast<size_t>(total), 0.f), diag(static_cast<size_t>(total), 0.f);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t k0 = 0; k0 < total; k0 += kBlockK) {
      const int64_t bk = std::min(kBlockK, total - k0);
      LoadKeyRows(plan, b, kvh, k0, bk, total, k.data());
      table.qk(q.data(), M, D, k.data(), bk, s.data(), kt.data());
      for (int64_t row = 0; row < M; ++row) {
        const int64_t qc = bi.past + first + row % nq;
        const float* sr = s.data() + row * kBlockK;
        const int64_t n = std::min(bk, qc - k0 + 1);  // causal: keys k0 + j <= qc
        if (pass == 0) {
          float mx = m[static_cast<size_t>(row)];
          for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sr[j]);
          if (mx == -INFINITY) continue;
          float acc = 0.f;
          for (int64_t j = 0; j < n; ++j) acc += std::exp(sr[j] - mx);
          const float mo = m[static_cast<size_t>(row)];
          l[static_cast<size_t>(row)] = (mo == -INFINITY ? 0.f : l[static_cast<size_t>(row)] * std::exp(mo - mx)) + acc;
          m[static_cast<size_t>(row)] = mx;
        } else {
          const float mx = m[static_cast<size_t>(row)], inv = 1.f / l[static_cast<size_t>(row)];
          for (int64_t j = 0; j < n; ++j) {
            const float a = std::exp(sr[j] - mx) * inv;
            vert[static_cast<size_t>(k0 + j)] += a;
            diag[static_cast<size_t>(qc - k0 - j)] += a;
          }
        }
      }
    }
  }

  std::vector<int64_t> cols = KeepTop(vert, kVslashSinkCols, vertical);
  std::vector<int64_t> diags = KeepTop(diag, kVslashLocalDiags, slash);
  std::sort(cols.begin(), cols.end());
  std::sort(diags.begin(), diags.end(), std::greater<int64_t>());  // range starts ascending

  const int64_t nblocks = (S + kSparseBlock - 1) / kSparseBlock;
  out->blocks.assign(static_cast<size_t>(nblocks), KeySet{});
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    KeySet& set = out->blocks[static_cast<size_t>(blk)];
    const int64_t c0 = bi.past + blk * kSparseBlock, c1 = bi.past + std::min(S, (blk + 1) * kSparseBlock);
    for (const int64_t d : diags) AppendRange(set.ranges, std::max<int64_t>(0, c0 - d), std::min(c1 - d, total));
    size_t r = 0;
    for (const int64_t c : cols) {
      if (c >= c1) break;
      while (r + 1 < set.ranges.size() && set.ranges[r + 1] <= c) r += 2;
      if (r + 1 < set.ranges.size() && set.ranges[r] <= c) continue;  // inside a range
      set.cols.push_back(c);
    }
  }
}

}  // namespace longctx::la
