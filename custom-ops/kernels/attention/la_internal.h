// Internals shared by the LongAttention driver (long_attention.cc), the pattern files
// (la_pattern_*.cc) and the per-ISA tile loops (long_attention_{scalar,avx2,avx512}.cc).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "longctx/long_attention.h"

namespace longctx::la {

constexpr int64_t kBlockK = 64;  // keys per tile (a multiple of every ISA's NV*W)
constexpr int64_t kRowsPerItem = 128;

// ---------------------------------------------------------------- patterns

// A contiguous key range [k0, k1) that rows of one query tile attend with query variant `variant`.
struct Span {
  int64_t k0, k1;
  int variant;
};

enum class TileKind { Empty, Full, Partial };

// Decides, for cache positions, which keys a query sees and at which RoPE positions. One
// implementation per file (la_pattern_dense.cc, la_pattern_streaming.cc, la_pattern_dca.cc).
// Positions q, k are cache indices. Query tiles never cross a multiple of query_align() (> 0).
class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual int num_variants() const = 0;          // query rotations per row (1, or 3 for dca)
  virtual bool keys_prerotated() const = 0;      // keys rotated once, when appended to the cache
  virtual int64_t query_align() const { return 0; }
  virtual int64_t query_position(int variant, int64_t q) const = 0;
  virtual int64_t key_position(int64_t k) const = 0;
  virtual int64_t max_position(int64_t total) const = 0;  // largest RoPE position used for `total` keys
  // Key spans needed by rows [q0, q1) (q1 - 1 < total); at most 3, ascending, disjoint.
  virtual int spans(int64_t q0, int64_t q1, Span out[3]) const = 0;
  // For a tile of rows [q0, q1) and keys [k0, k1) inside one span.
  virtual TileKind classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const = 0;
  virtual bool allowed(int64_t q, int64_t k) const = 0;   // element mask, only asked on Partial tiles
  // s[j] = -inf for j < n where !allowed(q, k0 + j): one call per row of a Partial tile. The default
  // (long_attention.cc) asks allowed() per key; a pattern with a closed form overrides it.
  virtual void mask_row(int64_t q, int64_t k0, int64_t n, float* s) const;
  virtual double scale_factor() const { return 1.0; }     // multiplies the softmax scale
};

// Factories (one per pattern file). They return nullptr and set *err for bad attributes.
std::unique_ptr<Pattern> MakeDense();
std::unique_ptr<Pattern> MakeStreaming(int64_t sink, int64_t window, std::string* err);
std::unique_ptr<Pattern> MakeDca(int64_t chunk_size, int64_t local_size, int64_t trained_context, int64_t total,
                                 std::string* err);
// trishape for a call whose query rows are cache indices [total - S, total).
std::unique_ptr<Pattern> MakeTrishape(int64_t sink, int64_t window, int64_t last, int64_t total, std::string* err);

// ---------------------------------------------------------------- sparse index (vslash, xattn)

constexpr int64_t kSparseBlock = 64;  // query rows per index block (rows i / 64 of the call)

// The keys one query block attends: contiguous ranges walked tile by tile, then gathered columns.
// Both are also limited by causality (k <= q) in the tile loop.
struct KeySet {
  std::vector<int64_t> ranges;  // [k0, k1) pairs, ascending, disjoint
  std::vector<int64_t> cols;    // ascending, outside every range
};

// One (batch, kv head): a key set per query block, built by la_sparse_vslash.cc / la_sparse_xattn.cc.
struct SparseIndex {
  std::vector<KeySet> blocks;
};

// ---------------------------------------------------------------- scratch accounting

void ScratchAdd(int64_t bytes);
void ScratchSub(int64_t bytes);

// 64-byte aligned float scratch, counted by the debug counters. Out of line on purpose: inline code in
// this header is compiled with every ISA's flags, and functions with external linkage must not be.
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(int64_t n);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void Reset(int64_t n);
  float* data() const { return data_; }

 private:
  void Release();
  float* data_ = nullptr;
  int64_t bytes_ = 0;
};

// ---------------------------------------------------------------- fp16

static inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3FFu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | man << 13;
  } else {
    bits = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as F16C's _MM_FROUND_TO_NEAREST_INT.
static inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (x > 0x7F800000u ? 0x200u : 0));
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow -> inf
  if (x < 0x38800000u) {                                                // subnormal or zero
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = x + 0xC8000000u;  // rebias exponent 127 -> 15
  r = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | r);
}

// ---------------------------------------------------------------- plan

struct BatchInfo {
  int64_t past = 0;   // cache rows before this call
  int64_t total = 0;  // valid rows after it
  float scale = 1.f;  // softmax scale incl. the pattern's factor
  const Pattern* pattern = nullptr;
  const SparseIndex* sparse = nullptr;  // [kv head] when the call runs vslash / xattn; else nullptr (a head with no blocks runs its pattern)
  const Pattern* const* head_pattern = nullptr;  // [kv head] for sparse prefill (per-head patterns); else `pattern` for all
};

// The pattern of kv head `kvh` and its sparse index (nullptr when the head walks its pattern's spans).
static inline const Pattern& HeadPattern(const BatchInfo& bi, int64_t kvh) {
  return bi.head_pattern != nullptr ? *bi.head_pattern[kvh] : *bi.pattern;
}
static inline const SparseIndex* HeadIndex(const BatchInfo& bi, int64_t kvh) {
  return bi.sparse != nullptr && !bi.sparse[kvh].blocks.empty() ? &bi.sparse[kvh] : nullptr;
}

// One unit of work: all G query heads of kv head `kvh`, query rows [i0, i1) of batch b, keys
// restricted to [ks, ke). When a query tile is split over keys, `slot` >= 0 names its partial state.
struct Item {
  int32_t b, kvh;
  int64_t i0, i1;
  int64_t ks, ke;
  int64_t slot;
};

struct Plan {
  const longctx_la_params* p = nullptr;
  int64_t G = 1, D = 0, R = 0, max_rows = 0;
  bool f16 = false;
  std::vector<BatchInfo> batch;
  std::vector<Item> items;
  int64_t nchunks = 1;
  float* partials = nullptr;  // per slot: O[max_rows][D], m[max_rows], l[max_rows]
  int64_t slot_floats = 0;
};

// Scratch of one chunk of the tile loop, in floats: Q (3 variants), O, m, l, S, Kt, K rows, V rows,
// one row and cos/sin rows; each part 16-float aligned. Allocated by the driver (baseline code), so the
// ISA files hold no destructors, landing pads or weak symbols.
enum ChunkPart { kPartQ, kPartO, kPartM, kPartL, kPartS, kPartKt, kPartKr, kPartVs, kPartRow, kPartCos, kPartSin, kNumParts };
struct ChunkLayout {
  int64_t offset[kNumParts];
  int64_t total;
};
static inline ChunkLayout MakeChunkLayout(int64_t M, int64_t D) {
  const int64_t sizes[kNumParts] = {3 * M * D, M * D, M, M, M * kBlockK, D * kBlockK, kBlockK * D, kBlockK * D, D, D, D};
  ChunkLayout layout{};
  for (int i = 0; i < kNumParts; ++i) {
    layout.offset[i] = layout.total;
    layout.total += (sizes[i] + 15) / 16 * 16;
  }
  return layout;
}

// The per-ISA part: one instance per ISA file (long_attention_{scalar,avx2,avx512}.cc).
struct Table {
  // The tile loop over the items of one chunk, with MakeChunkLayout(plan.max_rows, plan.D) floats of scratch.
  void (*chunk)(const Plan& plan, int64_t chunk, float* scratch);
  // s[r * kBlockK + j] = q_r . k_j for r < M, j < bk <= kBlockK (rows of length D, D a multiple of 8), through the
  // packed micro-kernel; kt: D * kBlockK floats of scratch.
  void (*qk)(const float* q, int64_t M, int64_t D, const float* k, int64_t bk, float* s, float* kt);
};
extern const Table kScalar, kAvx2, kAvx512;

// Writes row `m` of an item's finished state (O not yet normalised) to output and lse.
void StoreRow(const Plan& plan, const Item& item, int64_t row, const float* o, float m, float l);

}  // namespace longctx::la
