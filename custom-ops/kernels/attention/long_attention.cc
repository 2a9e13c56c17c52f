// LongAttention driver: validation, KV-cache append (shared buffer or copy), work decomposition over
// (batch, kv head, query tile[, key split]), ISA dispatch, and the log-sum-exp merge of key splits
// (decode: one query row, the cache split across threads; merge m = max m_s,
// l = sum l_s e^(m_s - m), O = sum O_s e^(m_s - m) / l). See longctx/long_attention.h for the contract.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "la_internal.h"
#include "la_sparse.h"
#include "la_tile_loop.h"
#include "cpu/dispatch.h"

namespace longctx::la {

namespace {
std::atomic<int64_t> g_scratch_now{0};
std::atomic<int64_t> g_scratch_peak{0};
}  // namespace

void ScratchAdd(int64_t bytes) {
  const int64_t now = g_scratch_now.fetch_add(bytes) + bytes;
  int64_t peak = g_scratch_peak.load();
  while (now > peak && !g_scratch_peak.compare_exchange_weak(peak, now)) {
  }
}
void ScratchSub(int64_t bytes) { g_scratch_now.fetch_sub(bytes); }

Scratch::Scratch(int64_t n) { Reset(n); }
Scratch::~Scratch() { Release(); }
void Scratch::Reset(int64_t n) {
  Release();
  if (n <= 0) return;
  bytes_ = n * static_cast<int64_t>(sizeof(float));
  void* p = nullptr;
  if (posix_memalign(&p, 64, static_cast<size_t>(bytes_)) != 0) throw std::bad_alloc();
  data_ = static_cast<float*>(p);
  ScratchAdd(bytes_);
}
void Scratch::Release() {
  if (data_ != nullptr) {
    free(data_);
    ScratchSub(bytes_);
  }
  data_ = nullptr;
  bytes_ = 0;
}

void Pattern::mask_row(int64_t q, int64_t k0, int64_t n, float* s) const {
  for (int64_t j = 0; j < n; ++j)
    if (!allowed(q, k0 + j)) s[j] = -INFINITY;
}

void StoreRow(const Plan& plan, const Item& it, int64_t row, const float* o, float m, float l) {
  const longctx_la_params& p = *plan.p;
  const int64_t nrows = it.i1 - it.i0, g = row / nrows, r = row % nrows;
  const int64_t h = it.kvh * plan.G + g, i = it.i0 + r, D = plan.D;
  const int64_t off = ((it.b * p.seq_len + i) * p.num_heads + h) * D;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  if (plan.f16) {
    uint16_t* dst = static_cast<uint16_t*>(p.output) + off;
    for (int64_t d = 0; d < D; ++d) dst[d] = FloatToHalf(o[d] * inv);
  } else {
    float* dst = static_cast<float*>(p.output) + off;
    for (int64_t d = 0; d < D; ++d) dst[d] = o[d] * inv;
  }
  if (p.lse != nullptr) p.lse[(it.b * p.num_heads + h) * p.seq_len + i] = l > 0.f ? m + std::log(l) : -INFINITY;
}

namespace {

std::string Str(int64_t v) { return std::to_string(v); }

// Runs fn(ctx, i) for i in [0, n) on the caller's executor; the first exception is re-thrown here.
template <typename F>
void ParallelFor(const longctx_la_params& p, int64_t n, F&& f) {
  struct Ctx {
    F* f;
    std::mutex mu;
    std::exception_ptr error;
  } ctx{&f, {}, nullptr};
  auto task = [](void* c, int64_t i) {
    auto* x = static_cast<Ctx*>(c);
    try {
      (*x->f)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(x->mu);
      if (!x->error) x->error = std::current_exception();
    }
  };
  if (p.parallel_for != nullptr && n > 1) {
    p.parallel_for(p.executor, n, task, &ctx);
  } else {
    for (int64_t i = 0; i < n; ++i) task(&ctx, i);
  }
  if (ctx.error) std::rethrow_exception(ctx.error);
}

template <typename T>
void LoadRowScalar(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  }
}

template <typename T>
void StoreRowScalar(const float* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToHalf(src[i]);
  }
}

// present[b, kvh] = past (unless shared) ++ new tokens (rotated for a pre-rotating pattern).
template <typename T>
void AppendKv(const Plan& plan, int64_t task) {
  const longctx_la_params& p = *plan.p;
  const int64_t b = task / p.kv_num_heads, kvh = task % p.kv_num_heads, D = plan.D, S = p.seq_len;
  const int64_t Tp = p.present_len, P = p.past_len;
  const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
  const bool shared = p.past_key != nullptr && p.past_key == p.present_key;
  for (int kv = 0; kv < 2; ++kv) {
    T* dst = static_cast<T*>(kv == 0 ? p.present_key : p.present_value) + (b * p.kv_num_heads + kvh) * Tp * D;
    const T* past = static_cast<const T*>(kv == 0 ? p.past_key : p.past_value);
    if (!shared) {
      if (bi.past > 0) std::memcpy(dst, past + (b * p.kv_num_heads + kvh) * P * D, sizeof(T) * bi.past * D);
      const int64_t tail = bi.past + S;
      if (tail < Tp) std::memset(static_cast<void*>(dst + tail * D), 0, sizeof(T) * (Tp - tail) * D);
    }
    const T* src = static_cast<const T*>(kv == 0 ? p.key : p.value);
    const bool rotate = kv == 0 && p.do_rotary && bi.pattern->keys_prerotated();
    std::vector<float> row(rotate ? static_cast<size_t>(D + plan.R) : 0);
    for (int64_t i = 0; i < S; ++i) {
      const T* s = src + ((b * S + i) * p.kv_num_heads + kvh) * D;
      T* d = dst + (bi.past + i) * D;
      if (!rotate) {
        std::memcpy(d, s, sizeof(T) * D);
        continue;
      }
      const int64_t half = plan.R / 2, pos = bi.pattern->key_position(bi.past + i);
      float* x = row.data();
      float* cs = x + D;
      float* sn = cs + half;
      LoadRowScalar(s, x, D);
      LoadRowScalar(static_cast<const T*>(p.cos_cache) + pos * half, cs, half);
      LoadRowScalar(static_cast<const T*>(p.sin_cache) + pos * half, sn, half);
      RotateRow(x, plan.R, cs, sn, p.rotary_interleaved != 0);
      StoreRowScalar(x, d, D);
    }
  }
}

bool IsSparse(longctx_la_pattern p) {
  return p == LONGCTX_LA_TRISHAPE || p == LONGCTX_LA_VSLASH || p == LONGCTX_LA_XATTN || p == LONGCTX_LA_BLOCK;
}

// The settings of a sparse prefill pattern (the layer's, or one kv head's).
std::string ValidateSparse(longctx_la_pattern pattern, const longctx_la_sparse& sp) {
  if (sp.min_len < 0) return "sparse min_len must be >= 0, got " + Str(sp.min_len);
  if (pattern == LONGCTX_LA_VSLASH && (sp.vertical < 0 || sp.slash < 0))
    return "vslash needs vertical >= 0 and slash >= 0 (got vertical=" + Str(sp.vertical) + ", slash=" + Str(sp.slash) + ")";
  if (pattern == LONGCTX_LA_XATTN && !(sp.threshold > 0.f && sp.threshold <= 1.f))
    return "xattn threshold must be in (0, 1], got " + std::to_string(sp.threshold);
  if (pattern == LONGCTX_LA_XATTN && (sp.stride < 1 || kSparseBlock % sp.stride != 0))
    return "xattn stride must divide 64 (e.g. 8 or 16), got " + Str(sp.stride);
  if (pattern == LONGCTX_LA_BLOCK && (sp.local_blocks < 1 || sp.vert_stride < 1))
    return "block needs local_blocks >= 1 and vert_stride >= 1 (got local_blocks=" + Str(sp.local_blocks) +
           ", vert_stride=" + Str(sp.vert_stride) + ")";
  return {};
}

std::string Validate(const longctx_la_params& p) {
  if (p.batch < 1 || p.seq_len < 1) return "batch and sequence length must be >= 1, got B=" + Str(p.batch) + ", S=" + Str(p.seq_len);
  if (p.num_heads < 1 || p.kv_num_heads < 1 || p.num_heads % p.kv_num_heads != 0)
    return "num_heads (" + Str(p.num_heads) + ") must be a positive multiple of kv_num_heads (" + Str(p.kv_num_heads) + ")";
  if (p.head_dim < 16 || p.head_dim > 256 || p.head_dim % 16 != 0)
    return "head_dim " + Str(p.head_dim) + " is not supported (supported: multiples of 16 from 16 to 256)";
  if (p.dtype != LONGCTX_F32 && p.dtype != LONGCTX_F16) return "dtype must be float32 or float16";
  if (p.query == nullptr || p.key == nullptr || p.value == nullptr || p.output == nullptr || p.seqlens_k == nullptr)
    return "query, key, value, seqlens_k and output are required";
  if (p.present_key == nullptr || p.present_value == nullptr || p.present_len < 1)
    return "present_key and present_value are required (present length " + Str(p.present_len) + ")";
  if ((p.past_key == nullptr) != (p.past_value == nullptr)) return "past_key and past_value must be given together";
  if (p.past_key == nullptr && p.past_len != 0) return "past_len is " + Str(p.past_len) + " but past_key is absent";
  if (p.past_len < 0) return "past_len must be >= 0";
  if ((p.past_key == p.present_key) != (p.past_value == p.present_value) && p.past_key != nullptr)
    return "past/present must share buffers for both key and value or for neither";
  if (p.do_rotary) {
    if (p.cos_cache == nullptr || p.sin_cache == nullptr) return "do_rotary=1 needs cos_cache and sin_cache";
    if (p.rotary_dim < 2 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
      return "rotary dim (2 * cos_cache.shape[1]) = " + Str(p.rotary_dim) + " must be even and <= head_dim " + Str(p.head_dim);
  }
  if (IsSparse(p.pattern))
    if (std::string e = ValidateSparse(p.pattern, p.sparse); !e.empty()) return e;
  if (p.heads != nullptr) {
    if (p.pattern != LONGCTX_LA_DENSE && !IsSparse(p.pattern))
      return "per-head settings need a dense or sparse prefill layer pattern (streaming and dca cache keys differently), got pattern " +
             Str(p.pattern);
    for (int64_t h = 0; h < p.kv_num_heads; ++h) {
      const longctx_la_head& hd = p.heads[h];
      const std::string who = "kv head " + Str(h) + ": ";
      if (hd.pattern != LONGCTX_LA_DENSE && !IsSparse(hd.pattern))
        return who + "pattern id " + Str(hd.pattern) + " is not a per-head pattern (valid: 0 dense, 3 trishape, 4 vslash, 5 xattn, 6 block)";
      if (hd.pattern == LONGCTX_LA_TRISHAPE && (hd.sink < 0 || hd.window < 1 || hd.sparse.last < 0))
        return who + "trishape needs sink >= 0, window >= 1 and last >= 0 (got sink=" + Str(hd.sink) + ", window=" + Str(hd.window) +
               ", last=" + Str(hd.sparse.last) + ")";
      if (IsSparse(hd.pattern))
        if (std::string e = ValidateSparse(hd.pattern, hd.sparse); !e.empty()) return who + e;
    }
  }
  return {};
}

// Whether a sparse pattern's budget is LARGER than a call with S rows and `total` keys (issue 10's bad
// input: the call runs dense and the op says so once). A budget exactly the sequence runs the sparse walk.
bool CoversAll(const longctx_la_head& h, int64_t S, int64_t total) {
  const longctx_la_sparse& sp = h.sparse;
  switch (h.pattern) {
    case LONGCTX_LA_TRISHAPE: return h.sink + h.window > total || sp.last > S;
    case LONGCTX_LA_VSLASH: return kVslashSinkCols + sp.vertical > total || kVslashLocalDiags + sp.slash > total;
    case LONGCTX_LA_BLOCK: return kBlockK * sp.local_blocks > total;
    default: return false;  // xattn's threshold is a share, never larger than the sequence
  }
}

// A status and its one-line message; plain strings are argument errors (empty = OK).
struct Result {
  Result(std::string m) : status(m.empty() ? LONGCTX_OK : LONGCTX_INVALID_ARGUMENT), msg(std::move(m)) {}  // NOLINT
  Result(const char* m) : Result(std::string(m)) {}                                                          // NOLINT
  Result(longctx_status s, std::string m) : status(s), msg(std::move(m)) {}
  longctx_status status;
  std::string msg;
};

// Everything before the tile loop: validation, patterns, the KV append and the sparse indices.
struct Prepared {
  Plan plan;
  const Table* table = nullptr;
  std::vector<std::unique_ptr<Pattern>> patterns;
  std::vector<std::vector<SparseIndex>> sparse;  // [b][kv head], empty for a batch that runs dense
  std::vector<std::vector<const Pattern*>> head_patterns;  // [b][kv head] for sparse prefill
  longctx_la_stats stats{};
};

Result Prepare(const longctx_la_params& p, Prepared& prep) {
  if (std::string e = Validate(p); !e.empty()) return e;
  constexpr dispatch::ByIsa<Table> kTables = {&kScalar, &kAvx2, &kAvx512};
  const Table* table = nullptr;
  std::string err;
  if (p.isa_override >= 0) {
    const char* name = longctx_isa_name(static_cast<longctx_isa>(p.isa_override));
    char missing[128];
    if (name == nullptr) return "isa override " + Str(p.isa_override) + " is not an ISA path (scalar, avx2, avx512)";
    if (!longctx_isa_supported(static_cast<longctx_isa>(p.isa_override), missing, sizeof missing))
      return Result(LONGCTX_ISA_REFUSED, std::string("isa ") + name + " was requested but this CPU lacks " + missing);
    table = kTables[p.isa_override];
  } else {
    table = dispatch::Select(kTables);
    if (table == nullptr) return Result(LONGCTX_ISA_REFUSED, longctx_isa_choice_error());
  }
  prep.table = table;

  Plan& plan = prep.plan;
  plan.p = &p;
  plan.D = p.head_dim;
  plan.G = p.num_heads / p.kv_num_heads;
  plan.R = p.do_rotary ? p.rotary_dim : 0;
  plan.f16 = p.dtype == LONGCTX_F16;
  const int64_t B = p.batch, S = p.seq_len;
  const bool shared = p.past_key != nullptr && p.past_key == p.present_key;
  const double base_scale = p.scale != 0.f ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));

  std::vector<std::unique_ptr<Pattern>>& patterns = prep.patterns;
  // Sparse prefill runs per kv head: the layer's settings for every head, or params.heads.
  const int64_t Hkv = p.kv_num_heads;
  const bool per_head = p.heads != nullptr || IsSparse(p.pattern);
  std::vector<longctx_la_head> heads;
  if (p.heads != nullptr) heads.assign(p.heads, p.heads + Hkv);
  else if (per_head) heads.assign(static_cast<size_t>(Hkv), longctx_la_head{p.pattern, p.sink, p.window, p.sparse});
  // What (b, kv head) runs: its pattern's spans (dense, or gated / covered), trishape, or an index.
  std::vector<longctx_la_pattern> run(static_cast<size_t>(B * Hkv), LONGCTX_LA_DENSE);
  prep.head_patterns.resize(static_cast<size_t>(B));
  plan.batch.resize(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
    bi.total = static_cast<int64_t>(p.seqlens_k[b]) + 1;
    if (bi.total < 1) return "seqlens_k[" + Str(b) + "] = " + Str(p.seqlens_k[b]) + " must be >= 0";
    bi.past = std::max<int64_t>(0, bi.total - S);
    if (bi.past + S > p.present_len)
      return "present length " + Str(p.present_len) + " is too small for batch " + Str(b) + ": " + Str(bi.past) +
             " past + " + Str(S) + " new tokens (seqlens_k = " + Str(p.seqlens_k[b]) + ")";
    if (!shared && bi.past > p.past_len)
      return "seqlens_k[" + Str(b) + "] = " + Str(p.seqlens_k[b]) + " implies " + Str(bi.past) +
             " past tokens but past_key holds " + Str(p.past_len);
    std::unique_ptr<Pattern> pat;
    switch (per_head ? LONGCTX_LA_DENSE : p.pattern) {
      case LONGCTX_LA_DENSE: pat = MakeDense(); break;  // sparse prefill: the batch's keys and positions are dense's
      case LONGCTX_LA_STREAMING: pat = MakeStreaming(p.sink, p.window, &err); break;
      case LONGCTX_LA_DCA: pat = MakeDca(p.chunk_size, p.local_size, p.trained_context, bi.total, &err); break;
      default: return "unknown pattern " + Str(p.pattern) + " (valid: dense, streaming, dca, trishape, vslash, xattn, block)";
    }
    if (!pat) return err;
    if (per_head) {
      std::vector<const Pattern*>& hp = prep.head_patterns[static_cast<size_t>(b)];
      hp.assign(static_cast<size_t>(Hkv), pat.get());
      for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
        const longctx_la_head& hd = heads[static_cast<size_t>(kvh)];
        if (hd.pattern == LONGCTX_LA_DENSE) continue;
        // Length gate, then the budget: a head that would not save anything runs dense.
        const bool gated = S < kSparseBlock || bi.total < hd.sparse.min_len;
        const bool covered = !gated && CoversAll(hd, S, bi.total);
        prep.stats.gated_heads += gated ? 1 : 0;
        prep.stats.covered_heads += covered ? 1 : 0;
        if (gated || covered) continue;
        prep.stats.sparse_heads += 1;
        run[static_cast<size_t>(b * Hkv + kvh)] = hd.pattern;
        if (hd.pattern != LONGCTX_LA_TRISHAPE) continue;
        std::unique_ptr<Pattern> tri = MakeTrishape(hd.sink, hd.window, hd.sparse.last, bi.total, &err);
        if (!tri) return err;
        hp[static_cast<size_t>(kvh)] = tri.get();
        patterns.push_back(std::move(tri));
      }
      bi.head_pattern = hp.data();
    }
    if (p.do_rotary) {
      const int64_t need = pat->max_position(std::max(bi.total, bi.past + S));
      if (need >= p.max_pos)
        return "cos_cache has " + Str(p.max_pos) + " positions but batch " + Str(b) + " needs position " + Str(need);
    }
    bi.scale = static_cast<float>(base_scale * pat->scale_factor());
    bi.pattern = pat.get();
    patterns.push_back(std::move(pat));
  }

  // 1. KV append.
  ParallelFor(p, B * p.kv_num_heads, [&](int64_t t) {
    if (plan.f16) AppendKv<uint16_t>(plan, t); else AppendKv<float>(plan, t);
  });

  // 1b. Sparse indices (vslash, xattn, block) from the appended keys: one per (batch, kv head) that runs one.
  const auto t_est = std::chrono::steady_clock::now();
  const int64_t nblocks = (S + kSparseBlock - 1) / kSparseBlock;
  auto indexed = [&](int64_t t) {
    const longctx_la_pattern r = run[static_cast<size_t>(t)];
    return r == LONGCTX_LA_VSLASH || r == LONGCTX_LA_XATTN || r == LONGCTX_LA_BLOCK;
  };
  bool per_head_index = false, xattn_index = false;
  prep.sparse.resize(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<SparseIndex>& ix = prep.sparse[static_cast<size_t>(b)];
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      if (!indexed(b * Hkv + kvh)) continue;
      ix.resize(static_cast<size_t>(Hkv));
      ix[static_cast<size_t>(kvh)].blocks.resize(static_cast<size_t>(nblocks));
      (run[static_cast<size_t>(b * Hkv + kvh)] == LONGCTX_LA_XATTN ? xattn_index : per_head_index) = true;
    }
    if (!ix.empty()) plan.batch[static_cast<size_t>(b)].sparse = ix.data();
  }
  if (per_head_index) {  // vslash and block: one task per (batch, kv head)
    ParallelFor(p, B * Hkv, [&](int64_t t) {
      const int64_t b = t / Hkv, kvh = t % Hkv;
      const longctx_la_sparse& sp = heads[static_cast<size_t>(kvh)].sparse;
      SparseIndex* out = run[static_cast<size_t>(t)] == LONGCTX_LA_DENSE ? nullptr : &prep.sparse[static_cast<size_t>(b)][static_cast<size_t>(kvh)];
      if (run[static_cast<size_t>(t)] == LONGCTX_LA_VSLASH) BuildVslash(plan, *table, b, kvh, sp.vertical, sp.slash, out);
      if (run[static_cast<size_t>(t)] == LONGCTX_LA_BLOCK) BuildBlockLayout(plan, b, sp.local_blocks, sp.vert_stride, out);
    });
  }
  if (xattn_index) {  // xattn: one task per (batch, kv head, query block)
    ParallelFor(p, B * Hkv * nblocks, [&](int64_t t) {
      const int64_t b = t / (Hkv * nblocks), kvh = t / nblocks % Hkv, blk = t % nblocks;
      const longctx_la_sparse& sp = heads[static_cast<size_t>(kvh)].sparse;
      if (run[static_cast<size_t>(b * Hkv + kvh)] == LONGCTX_LA_XATTN)
        BuildXattnBlock(plan, *table, b, kvh, blk, sp.threshold, sp.stride,
                        &prep.sparse[static_cast<size_t>(b)][static_cast<size_t>(kvh)].blocks[static_cast<size_t>(blk)]);
    });
  }
  prep.stats.estimate_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t_est).count();
  for (int64_t b = 0; b < B; ++b) {
    const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
    for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
      if (run[static_cast<size_t>(b * Hkv + kvh)] == LONGCTX_LA_TRISHAPE) {  // the spans of one row are exact for trishape
        for (int64_t i = 0; i < S; ++i) {
          Span sp[3];
          const int64_t q = bi.past + i;
          const int n = HeadPattern(bi, kvh).spans(q, q + 1, sp);
          for (int si = 0; si < n; ++si) prep.stats.keys_selected += std::min(sp[si].k1, bi.total) - sp[si].k0;
          prep.stats.keys_causal += q + 1;
        }
      }
      const SparseIndex* index = HeadIndex(bi, kvh);
      if (index == nullptr) continue;
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t c0 = bi.past + blk * kSparseBlock, c1 = bi.past + std::min(S, (blk + 1) * kSparseBlock);
        prep.stats.keys_selected += SelectedPairs(index->blocks[static_cast<size_t>(blk)], c0, c1);
        prep.stats.keys_causal += (c0 + 1 + c1) * (c1 - c0) / 2;
      }
    }
  }
  return Result(std::string());
}

Result Run(const longctx_la_params& p) {
  const auto t_start = std::chrono::steady_clock::now();
  Prepared prep;
  if (Result r = Prepare(p, prep); r.status != LONGCTX_OK) return r;
  Plan& plan = prep.plan;
  const Table* table = prep.table;
  const int64_t B = p.batch, S = p.seq_len;

  // 2. Work items: query tiles of about 64 rows (all G heads together), aligned for the pattern.
  const int threads = p.num_threads_hint > 0 ? p.num_threads_hint : std::max(1u, std::thread::hardware_concurrency());
  const int64_t rows_per_tile = std::max<int64_t>(1, kRowsPerItem / plan.G);
  struct Tile { int32_t b; int64_t i0, i1; };
  std::vector<Tile> tiles;
  for (int64_t b = 0; b < B; ++b) {
    const BatchInfo& bi = plan.batch[static_cast<size_t>(b)];
    const int64_t align = bi.pattern->query_align();
    for (int64_t i0 = 0; i0 < S;) {
      int64_t i1 = std::min(S, i0 + rows_per_tile);
      if (align > 0) i1 = std::min(i1, ((bi.past + i0) / align + 1) * align - bi.past);
      if (bi.sparse != nullptr) i1 = std::min(i1, (i0 / kSparseBlock + 1) * kSparseBlock);  // one index block
      tiles.push_back(Tile{static_cast<int32_t>(b), i0, i1});
      i0 = i1;
    }
  }
  const int64_t base_items = static_cast<int64_t>(tiles.size()) * p.kv_num_heads;
  plan.max_rows = plan.G * std::min<int64_t>(rows_per_tile, S);
  int64_t slots = 0;
  struct Group { size_t first, count; };
  std::vector<Group> groups;
  for (const Tile& t : tiles) {
    const BatchInfo& bi = plan.batch[static_cast<size_t>(t.b)];
    const int64_t kend = std::min(bi.total, bi.past + t.i1);
    int64_t nsplit = 1;
    if (base_items < 2 * threads) {
      nsplit = std::min<int64_t>((2 * threads + base_items - 1) / base_items, (kend + 4 * kBlockK - 1) / (4 * kBlockK));
      nsplit = std::max<int64_t>(1, nsplit);
    }
    const int64_t per = ((kend + nsplit - 1) / nsplit + kBlockK - 1) / kBlockK * kBlockK;
    for (int64_t kvh = 0; kvh < p.kv_num_heads; ++kvh) {
      groups.push_back(Group{plan.items.size(), 0});
      for (int64_t s = 0; s < nsplit; ++s) {
        const int64_t ks = s * per, ke = s + 1 == nsplit ? bi.total : std::min(bi.total, (s + 1) * per);
        if (ks >= ke && s > 0) break;
        plan.items.push_back(Item{t.b, static_cast<int32_t>(kvh), t.i0, t.i1, ks, ke, nsplit > 1 ? slots++ : -1});
        ++groups.back().count;
      }
    }
  }
  Scratch partials;
  plan.slot_floats = plan.max_rows * (plan.D + 2);
  if (slots > 0) {
    partials.Reset(slots * plan.slot_floats);
    plan.partials = partials.data();
  }
  plan.nchunks = std::min<int64_t>(static_cast<int64_t>(plan.items.size()), 4 * static_cast<int64_t>(threads));

  // 3. Tile loop.
  const int64_t chunk_floats = MakeChunkLayout(plan.max_rows, plan.D).total;
  ParallelFor(p, plan.nchunks, [&](int64_t c) {
    Scratch scratch(chunk_floats);
    table->chunk(plan, c, scratch.data());
  });

  // 4. Merge key splits.
  if (slots > 0) {
    ParallelFor(p, static_cast<int64_t>(groups.size()), [&](int64_t gi) {
      const Group& g = groups[static_cast<size_t>(gi)];
      const Item& first = plan.items[g.first];
      if (first.slot < 0) return;
      const int64_t M = plan.G * (first.i1 - first.i0), D = plan.D;
      std::vector<float> o(static_cast<size_t>(D));
      for (int64_t row = 0; row < M; ++row) {
        float m = -INFINITY;
        for (size_t s = 0; s < g.count; ++s) {
          const float* st = plan.partials + plan.items[g.first + s].slot * plan.slot_floats;
          m = std::max(m, st[plan.max_rows * D + row]);
        }
        float l = 0.f;
        std::fill(o.begin(), o.end(), 0.f);
        if (m != -INFINITY) {
          for (size_t s = 0; s < g.count; ++s) {
            const float* st = plan.partials + plan.items[g.first + s].slot * plan.slot_floats;
            const float ms = st[plan.max_rows * D + row];
            if (ms == -INFINITY) continue;
            const float w = std::exp(ms - m);
            l += st[plan.max_rows * D + plan.max_rows + row] * w;
            for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] += st[row * D + d] * w;
          }
        }
        StoreRow(plan, first, row, o.data(), m, l);
      }
    });
  }
  if (p.stats != nullptr) {
    *p.stats = prep.stats;
    p.stats->total_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t_start).count();
  }
  return Result(std::string());
}

Result SparseMask(const longctx_la_params& p, uint8_t* mask) {
  if (mask == nullptr) return "mask is NULL";
  Prepared prep;
  if (Result r = Prepare(p, prep); r.status != LONGCTX_OK) return r;
  const int64_t S = p.seq_len, Hkv = p.kv_num_heads, Tp = p.present_len;
  for (int64_t b = 0; b < p.batch; ++b) {
    const BatchInfo& bi = prep.plan.batch[static_cast<size_t>(b)];
    for (int64_t kvh = 0; kvh < Hkv; ++kvh)
      for (int64_t i = 0; i < S; ++i) {
        uint8_t* row = mask + ((b * Hkv + kvh) * S + i) * Tp;
        const int64_t q = bi.past + i;
        std::memset(row, 0, static_cast<size_t>(Tp));
        const SparseIndex* index = HeadIndex(bi, kvh);
        if (index == nullptr) {
          const Pattern& pat = HeadPattern(bi, kvh);
          for (int64_t k = 0; k <= q && k < bi.total; ++k) row[k] = pat.allowed(q, k) ? 1 : 0;
          continue;
        }
        const KeySet& set = index->blocks[static_cast<size_t>(i / kSparseBlock)];
        for (size_t r = 0; r + 1 < set.ranges.size(); r += 2)
          for (int64_t k = set.ranges[r]; k < set.ranges[r + 1] && k <= q; ++k) row[k] = 1;
        for (const int64_t k : set.cols)
          if (k <= q) row[k] = 1;
      }
  }
  return Result(std::string());
}

}  // namespace
}  // namespace longctx::la

extern "C" {

longctx_status longctx_long_attention(const longctx_la_params* params, char* err, size_t err_len) {
  std::string msg;
  longctx_status status = LONGCTX_INVALID_ARGUMENT;
  try {
    const longctx::la::Result r = params == nullptr ? longctx::la::Result("params is NULL") : longctx::la::Run(*params);
    status = r.status;
    msg = r.msg;
  } catch (const std::bad_alloc&) {
    msg = "out of memory";
    status = LONGCTX_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    msg = e.what();
    status = LONGCTX_INTERNAL;
  } catch (...) {
    msg = "unknown error";
    status = LONGCTX_INTERNAL;
  }
  if (status == LONGCTX_OK) return LONGCTX_OK;
  if (err != nullptr && err_len > 0) {
    const size_t n = std::min(err_len - 1, msg.size());
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
  }
  return status;
}

longctx_status longctx_la_sparse_mask(const longctx_la_params* params, uint8_t* mask, char* err, size_t err_len) {
  try {
    const longctx::la::Result r =
        params == nullptr ? longctx::la::Result("params is NULL") : longctx::la::SparseMask(*params, mask);
    if (r.status != LONGCTX_OK && err != nullptr && err_len > 0) {
      const size_t n = std::min(err_len - 1, r.msg.size());
      std::memcpy(err, r.msg.data(), n);
      err[n] = '\0';
    }
    return r.status;
  } catch (...) {
    return LONGCTX_INTERNAL;
  }
}

int64_t longctx_la_scratch_peak_bytes(void) { return longctx::la::g_scratch_peak.load(); }
void longctx_la_scratch_reset(void) { longctx::la::g_scratch_peak.store(longctx::la::g_scratch_now.load()); }

}  // extern "C"
