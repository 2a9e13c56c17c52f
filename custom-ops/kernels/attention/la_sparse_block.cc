// Sparse prefill "block": a static block-sparse layout, the "local + vertical stride" layout of Phi-3-small's
// blocksparse attention (microsoft/Phi-3-small, triton_blocksparse_attention_layer; the layout ORT's
// com.microsoft.SparseAttention takes as CSR block_row_indices / block_col_indices), with 64-key blocks:
//   query block qb (the cache block of its last row) attends key block j <= qb
//   iff  qb - j < local_blocks  or  (j + 1) % vert_stride == 0
// No estimate: the index is the layout, identical for every kv head.
#include "la_sparse.h"

namespace longctx::la {

void BuildBlockLayout(const Plan& plan, int64_t b, int64_t local_blocks, int64_t vert_stride, SparseIndex* out) {
  const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
  const int64_t S = plan.p->seq_len;
  for (size_t blk = 0; blk < out->blocks.size(); ++blk) {
    KeySet& set = out->blocks[blk];
    const int64_t c1 = bi.past + std::min(S, static_cast<int64_t>(blk + 1) * kSparseBlock);
    const int64_t qb = (c1 - 1) / kBlockK;
    for (int64_t j = 0; j <= qb; ++j)
      if (qb - j < local_blocks || (j + 1) % vert_stride == 0) AppendRange(set.ranges, j * kBlockK, std::min(c1, (j + 1) * kBlockK));
  }
}

}  // namespace longctx::la
