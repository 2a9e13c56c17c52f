// LongAttention kernel: ORT-free C API (plain params and strides).
//
// Tiled online-softmax ("flash") attention, Dao et al. 2022 "FlashAttention" (Algorithm 1: running row
// max m, running sum l, output rescaled by exp(m_old - m_new)), on CPU, with GQA head grouping, causal
// masking, RoPE applied inside the kernel, a KV cache appended in place, and three patterns:
//   dense      causal attention; keys are stored ROTATED in the cache (exactly as
//              com.microsoft.GroupQueryAttention with do_rotary=1);
//   streaming  StreamingLLM (Xiao et al. 2023): query at cache index q sees keys j < sink or
//              q - window < j <= q; keys stored UN-rotated, rotated with their cache index;
//   dca        Dual Chunk Attention (An et al. 2024, ChunkLlama; vLLM dual_chunk_rope.py /
//              dual_chunk_flash_attn.py): intra / successive / inter chunk parts with their own
//              query positions, merged exactly by one online softmax (== log-sum-exp merge);
//   trishape, vslash, xattn, block   sparse PREFILL (la_pattern_trishape.cc, la_sparse_*.cc): keys are cached
//              rotated as for dense, so decode and short calls run dense over the same cache (the
//              length gate `sparse.min_len`, see longctx_la_sparse below).
//
// Tensor layouts (row-major, element strides implied):
//   query   [B, S, H*D]        key/value (new tokens) [B, S, Hkv*D]
//   past    [B, Hkv, P, D]     present [B, Hkv, Tp, D] with Tp = present_len
//   output  [B, S, H*D]        lse (optional) float32 [B, H, S], natural log of the softmax sum
//   cos/sin [max_pos, R/2]     seqlens_k int32 [B] = valid length - 1 (as GQA)
// For batch b the valid length is total_b = seqlens_k[b] + 1, the cache holds past_b = total_b - S
// tokens before this call, and query i has cache index past_b + i. The new tokens are written to
// present rows [past_b, past_b + S); when present_key == past_key (one shared buffer) nothing else is
// touched, otherwise the valid past rows are copied first and rows [total_b, Tp) are zeroed (as GQA).
// Work is proportional to the tokens present (total_b), never to the buffer capacity (Tp or P).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "longctx/cpu.h"
#include "longctx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum longctx_dtype { LONGCTX_F32 = 0, LONGCTX_F16 = 1 } longctx_dtype;

typedef enum longctx_la_pattern {
  LONGCTX_LA_DENSE = 0,
  LONGCTX_LA_STREAMING = 1,
  LONGCTX_LA_DCA = 2,
  LONGCTX_LA_TRISHAPE = 3,  // SCBench tri-shape: sink + local band, dense for the last `last` query rows
  LONGCTX_LA_VSLASH = 4,    // MInference vertical-slash (Jiang et al. 2024), estimated per call
  LONGCTX_LA_XATTN = 5,     // XAttention antidiagonal block selection (Xu et al. 2025), estimated per call
  LONGCTX_LA_BLOCK = 6      // static block-sparse layout: local blocks + every vert_stride-th block (Phi-3-small)
} longctx_la_pattern;

// Sparse prefill settings (patterns trishape, vslash, xattn). A call runs sparse only when it has at
// least 64 query rows (one estimation block) and total_b >= min_len tokens; otherwise, and when the budget
// is larger than the sequence (vslash: 30 + vertical > total or 100 + slash > total; trishape: sink + window
// > total or last > S; block: 64 local_blocks > total), it runs dense and says so in longctx_la_stats.
typedef struct longctx_la_sparse {
  int64_t min_len;           // length gate (tokens in the cache after the call)
  int64_t vertical, slash;   // vslash: columns / diagonals kept beyond the first 30 columns and last 100 diagonals
  float threshold;           // xattn: softmax mass each query block keeps (0, 1]
  int64_t stride;            // xattn: antidiagonal stride (divides 64)
  int64_t last;              // trishape: query rows at the end of the call that attend densely (sink, window: above)
  int64_t local_blocks;      // block: 64-key blocks before and including the diagonal block
  int64_t vert_stride;       // block: also every key block j with (j + 1) % vert_stride == 0
} longctx_la_sparse;

// Per-KV-head sparse prefill settings (issue 10 item 2, per-head calibration): when params.heads is set, kv head h
// runs heads[h] instead of the layer's pattern / sink / window / sparse. Per KV head, not per query head: the tile
// loop's unit of work is one kv head with its G query heads (each K/V tile loaded once for the group) and the
// estimators already build one index per kv head from the G heads' scores, so a per-query-head choice would cost G
// times the K/V traffic. Patterns: dense, trishape, vslash, xattn, block (all cache keys rotated, so any mix shares
// one cache); each head has its own length gate (sparse.min_len) and budget check.
typedef struct longctx_la_head {
  longctx_la_pattern pattern;
  int64_t sink, window;      // trishape
  longctx_la_sparse sparse;
} longctx_la_head;

// What one call did (written, not accumulated, when params.stats is set).
typedef struct longctx_la_stats {
  int64_t sparse_heads;      // (batch, kv head) pairs that ran sparse
  int64_t gated_heads;       // pairs that ran dense because of the length gate
  int64_t covered_heads;     // pairs that ran dense because the budget covers the whole sequence
  int64_t keys_selected;     // (query row, key) pairs inside the selected index, summed over the sparse pairs
  int64_t keys_causal;       // causal (query row, key) pairs of the same pairs (density = selected / causal)
  int64_t estimate_ns;       // wall time of the estimation (index building)
  int64_t total_ns;          // wall time of the whole call
} longctx_la_stats;


// Executor: must call fn(ctx, i) exactly once for every i in [0, n), in any order and on any threads,
// and return when all calls have finished. NULL = run serially on the calling thread.
typedef void (*longctx_task_fn)(void* ctx, int64_t i);
typedef void (*longctx_parallel_for_fn)(void* executor, int64_t n, longctx_task_fn fn, void* ctx);

typedef struct longctx_la_params {
  longctx_dtype dtype;  // of query/key/value/past/present/output/cos/sin
  int64_t batch, seq_len, num_heads, kv_num_heads, head_dim;

  const void* query;
  const void* key;
  const void* value;
  const void* past_key;    // may be NULL (then past_len must be 0)
  const void* past_value;
  int64_t past_len;        // P: past buffer length (rows per head)
  void* present_key;       // required
  void* present_value;     // required
  int64_t present_len;     // Tp
  const int32_t* seqlens_k;
  void* output;
  float* lse;              // optional

  int do_rotary, rotary_interleaved;
  const void* cos_cache;   // [max_pos, rotary_dim/2]
  const void* sin_cache;
  int64_t rotary_dim, max_pos;

  float scale;             // 0 => 1/sqrt(head_dim)
  longctx_la_pattern pattern;
  int64_t sink, window;                              // streaming
  int64_t chunk_size, local_size, trained_context;   // dca (trained_context 0 => no scale factor)
  // -1 = the library's active path (longctx/cpu.h: best, or LONGCTX_ISA, or longctx_isa_set); otherwise a
  // longctx_isa value forcing that path for this call (the op's `isa` attribute). A path the CPU lacks is
  // refused (LONGCTX_ISA_REFUSED), never downgraded.
  int isa_override;

  longctx_parallel_for_fn parallel_for;  // optional
  void* executor;
  int num_threads_hint;                  // used to size the work split; <= 0 => hardware concurrency

  longctx_la_sparse sparse;              // trishape / vslash / xattn (also uses sink, window)
  longctx_la_stats* stats;               // optional
  const longctx_la_head* heads;          // optional [kv_num_heads]: per-head sparse settings (needs a sparse or dense pattern)
} longctx_la_params;

// Runs the op. On anything but LONGCTX_OK a one-line message is written to err (when not NULL).
// Validation happens before any output is written.
longctx_status longctx_long_attention(const longctx_la_params* params, char* err, size_t err_len);

// Debug counters of the kernel's scratch allocations (bytes), process-wide: the high-water mark of
// scratch held at once since the last reset. Used by tests to check memory follows the tokens present.
int64_t longctx_la_scratch_peak_bytes(void);

// The selected index of a sparse pattern, for tests: validates like longctx_long_attention, appends the new
// tokens to present (as a call would) and writes mask[((b * Hkv + kvh) * S + i) * present_len + k] = 1 where
// query row i of batch b, kv head kvh attends key k (0 elsewhere, including k beyond total_b). A gated or
// covered call yields the causal (dense) mask.
longctx_status longctx_la_sparse_mask(const longctx_la_params* params, uint8_t* mask, char* err, size_t err_len);
void longctx_la_scratch_reset(void);

#ifdef __cplusplus
}
#endif
