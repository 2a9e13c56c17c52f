// Sparse prefill (vslash, xattn, block): building the per-(batch, kv head) index the tile loop walks.
// la_sparse_common.cc: query/key loading and range helpers; la_sparse_vslash.cc, la_sparse_xattn.cc: one
// estimator each; la_sparse_block.cc: the static layout (no estimate). The estimators' dot products go through
// the active ISA's Table::qk (the tile loop's packed, register-blocked micro-kernel).
//
// GQA: one index per kv head, from the scores of its G query heads (each softmaxed on its own, then
// summed), so each K/V tile is still loaded once for all G heads (the tile loop's unit of work).
#pragma once

#include "la_internal.h"

namespace longctx::la {

constexpr int64_t kVslashLastQ = 64;       // queries the vslash estimate uses (the last of the call)
constexpr int64_t kVslashSinkCols = 30;    // first columns always kept (MInference)
constexpr int64_t kVslashLocalDiags = 100; // last diagonals always kept (MInference)

// Query row i of the call, head h, batch b: rotated at cache position past + i and scaled by bi.scale.
void LoadQueryRow(const Plan& plan, int64_t b, int64_t h, int64_t i, float* row);
// Key rows [k0, k0 + n) of present for (b, kvh) as float; rows at or beyond `total` are zero.
void LoadKeyRows(const Plan& plan, int64_t b, int64_t kvh, int64_t k0, int64_t n, int64_t total, float* dst);
// Appends [k0, k1) to ascending ranges, merging with the last one when they touch (k0 >= its start).
void AppendRange(std::vector<int64_t>& ranges, int64_t k0, int64_t k1);
// Causal (row, key) pairs of rows [c0, c1) inside the set.
int64_t SelectedPairs(const KeySet& set, int64_t c0, int64_t c1);

// MInference vertical-slash index for (b, kvh).
void BuildVslash(const Plan& plan, const Table& table, int64_t b, int64_t kvh, int64_t vertical, int64_t slash,
                 SparseIndex* out);
// The static block layout of batch b (the same for every kv head).
void BuildBlockLayout(const Plan& plan, int64_t b, int64_t local_blocks, int64_t vert_stride, SparseIndex* out);
// XAttention key blocks for query block `block` of (b, kvh).
void BuildXattnBlock(const Plan& plan, const Table& table, int64_t b, int64_t kvh, int64_t block, float threshold,
                     int64_t stride, KeySet* out);

}  // namespace longctx::la
