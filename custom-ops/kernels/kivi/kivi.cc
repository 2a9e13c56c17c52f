// KIVI entry points (longctx/kivi.h): argument checks, per-group scale / zero / reciprocal, the attention driver,
// and the dispatch to the scalar / AVX2 / AVX-512 loops.
//
// Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache" (arXiv:2402.02750), section 3:
// keys per channel and values per token, asymmetric (zero = min, scale = (max - min) / (2^b - 1)), group size 32,
// the most recent R tokens in full precision. Attention: softmax(q K^T * scale) V over [dequantized prefix |
// fp32 residual], the online softmax of Milakov & Gimelshein 2018 (running max m, sum l, rescaled accumulator).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/guard.h"
#include "kivi/kivi_kernels.h"
#include "longctx/kivi.h"

namespace {

namespace kv = longctx::kivi;

constexpr longctx::dispatch::ByIsa<kv::Table> kTables = {&kv::kScalar, &kv::kAvx2, &kv::kAvx512};

using longctx::Guard;

// zero = min, scale = (max - min) / qmax, inv = 1 / scale (0 for a constant group).
void Range(float lo, float hi, int bits, float* scale, float* zero, float* inv) {
  const float s = (hi - lo) / static_cast<float>((1 << bits) - 1);
  *scale = s;
  *zero = lo;
  *inv = s > 0.0f ? 1.0f / s : 0.0f;
}

bool BadQuant(const longctx_kivi_quant_params* p, bool keys, bool dequant) {
  if (p == nullptr || (p->bits != 2 && p->bits != 4) || p->group <= 0 || p->tokens < 0 || p->head_dim <= 0 ||
      p->head_dim % 8 != 0)
    return true;
  if (keys ? p->tokens % p->group != 0 : p->head_dim % p->group != 0) return true;
  if (p->tokens == 0) return false;
  if (p->codes == nullptr || p->qparams == nullptr) return true;
  if (dequant) return p->y == nullptr || p->y_token_stride < p->head_dim;
  return p->x == nullptr || p->x_token_stride < p->head_dim;
}

}  // namespace

extern "C" longctx_status longctx_kivi_quantize_keys(const longctx_kivi_quant_params* p) {
  if (BadQuant(p, true, false)) return LONGCTX_INVALID_ARGUMENT;
  const kv::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  return Guard([&] {
    const int64_t D = p->head_dim, G = p->group, rb = D * p->bits / 8;
    const int bits = static_cast<int>(p->bits);
    std::vector<float> lo(D), hi(D), inv(D);
    for (int64_t g = 0; g < p->tokens / G; ++g) {
      const float* x = p->x + g * G * p->x_token_stride;
      for (int64_t j = 0; j < D; ++j) lo[j] = hi[j] = x[j];
      for (int64_t r = 1; r < G; ++r)
        for (int64_t j = 0; j < D; ++j) {
          const float v = x[r * p->x_token_stride + j];
          lo[j] = std::min(lo[j], v);
          hi[j] = std::max(hi[j], v);
        }
      float* scale = p->qparams + g * 2 * D;
      float* zero = scale + D;
      for (int64_t j = 0; j < D; ++j) Range(lo[j], hi[j], bits, &scale[j], &zero[j], &inv[j]);
      for (int64_t r = 0; r < G; ++r) t->pack_row(x + r * p->x_token_stride, zero, inv.data(), D, bits, p->codes + (g * G + r) * rb);
    }
    return LONGCTX_OK;
  });
}

extern "C" longctx_status longctx_kivi_quantize_values(const longctx_kivi_quant_params* p) {
  if (BadQuant(p, false, false)) return LONGCTX_INVALID_ARGUMENT;
  const kv::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  return Guard([&] {
    const int64_t D = p->head_dim, G = p->group, ng = D / G, rb = D * p->bits / 8;
    const int bits = static_cast<int>(p->bits);
    std::vector<float> zero(D), inv(D);
    for (int64_t r = 0; r < p->tokens; ++r) {
      const float* x = p->x + r * p->x_token_stride;
      float* scale = p->qparams + r * 2 * ng;
      for (int64_t g = 0; g < ng; ++g) {
        float lo = x[g * G], hi = x[g * G];
        for (int64_t j = g * G + 1; j < (g + 1) * G; ++j) {
          lo = std::min(lo, x[j]);
          hi = std::max(hi, x[j]);
        }
        float s, z, i;
        Range(lo, hi, bits, &s, &z, &i);
        scale[g] = s;
        scale[ng + g] = z;
        std::fill(zero.begin() + g * G, zero.begin() + (g + 1) * G, z);
        std::fill(inv.begin() + g * G, inv.begin() + (g + 1) * G, i);
      }
      t->pack_row(x, zero.data(), inv.data(), D, bits, p->codes + r * rb);
    }
    return LONGCTX_OK;
  });
}

namespace {

// Per-channel scale / zero vectors of value row r (params [2, D / G]) expanded to D channels.
void ValueRow(const float* params, int64_t D, int64_t G, float* scale, float* zero) {
  const int64_t ng = D / G;
  for (int64_t g = 0; g < ng; ++g) {
    std::fill(scale + g * G, scale + (g + 1) * G, params[g]);
    std::fill(zero + g * G, zero + (g + 1) * G, params[ng + g]);
  }
}

}  // namespace

extern "C" longctx_status longctx_kivi_dequantize_keys(const longctx_kivi_quant_params* p) {
  if (BadQuant(p, true, true)) return LONGCTX_INVALID_ARGUMENT;
  const kv::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  const int64_t D = p->head_dim, G = p->group, rb = D * p->bits / 8;
  for (int64_t r = 0; r < p->tokens; ++r) {
    const float* scale = p->qparams + (r / G) * 2 * D;
    t->unpack_row(p->codes + r * rb, scale, scale + D, D, static_cast<int>(p->bits), p->y + r * p->y_token_stride);
  }
  return LONGCTX_OK;
}

extern "C" longctx_status longctx_kivi_dequantize_values(const longctx_kivi_quant_params* p) {
  if (BadQuant(p, false, true)) return LONGCTX_INVALID_ARGUMENT;
  const kv::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return LONGCTX_ISA_REFUSED;
  return Guard([&] {
    const int64_t D = p->head_dim, G = p->group, rb = D * p->bits / 8;
    std::vector<float> scale(D), zero(D);
    for (int64_t r = 0; r < p->tokens; ++r) {
      ValueRow(p->qparams + r * 2 * (D / G), D, G, scale.data(), zero.data());
      t->unpack_row(p->codes + r * rb, scale.data(), zero.data(), D, static_cast<int>(p->bits), p->y + r * p->y_token_stride);
    }
    return LONGCTX_OK;
  });
}

namespace {

using P = longctx_kivi_attention_params;

std::string Check(const P& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (p.batch < 1 || p.seq_len < 1 || p.num_heads < 1 || p.kv_num_heads < 1 || p.num_heads % p.kv_num_heads != 0)
    return "batch, seq_len, heads must be positive and num_heads a multiple of kv_num_heads";
  if (p.bits != 2 && p.bits != 4) return "bits " + s(p.bits) + ": KIVI stores 2 or 4 bits";
  if (p.group <= 0 || p.head_dim % 8 != 0 || p.head_dim % p.group != 0)
    return "head_dim " + s(p.head_dim) + " must be a multiple of 8 and of the group size " + s(p.group);
  if (p.quant_len < 0 || p.quant_len % p.group != 0)
    return "the quantized prefix has " + s(p.quant_len) + " tokens, not a multiple of the group size " + s(p.group);
  if (p.quant_len > 0 && (!p.key_codes || !p.key_params || !p.value_codes || !p.value_params))
    return "a quantized prefix needs key/value codes and params";
  if (p.residual_len < 0 || (p.residual_len > 0 && (!p.past_key || !p.past_value))) return "past residual missing";
  if (!p.query || !p.key || !p.value || !p.present_key || !p.present_value || !p.output) return "a required pointer is null";
  if (p.do_rotary) {
    if (!p.cos_cache || !p.sin_cache || p.rotary_dim <= 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim)
      return "rotary needs cos/sin caches and an even rotary_dim <= head_dim";
    const int64_t last = p.quant_len + p.residual_len + p.seq_len - 1;
    if (last >= p.max_pos) return "position " + s(last) + " is past the cos/sin caches (" + s(p.max_pos) + " rows)";
  }
  return "";
}

// GQA's RoPE at position pos on one head row (in place): half-split pairs (j, j + R/2) or interleaved (2j, 2j+1).
void Rotate(float* x, const P& p, int64_t pos) {
  const int64_t half = p.rotary_dim / 2;
  const float* c = p.cos_cache + pos * half;
  const float* sn = p.sin_cache + pos * half;
  for (int64_t j = 0; j < half; ++j) {
    const int64_t a = p.rotary_interleaved ? 2 * j : j, b = p.rotary_interleaved ? 2 * j + 1 : j + half;
    const float x1 = x[a], x2 = x[b];
    x[a] = x1 * c[j] - x2 * sn[j];
    x[b] = x2 * c[j] + x1 * sn[j];
  }
}

struct Job {
  const P* p;
  const kv::Table* t;
  int64_t row_blocks;  // query-position blocks per (b, kv head)
  int64_t splits;      // key-range chunks per (b, kv head, row block), merged by log-sum-exp
  int64_t chunk;       // keys per chunk (a multiple of group)
  float* partial;      // [items][rows of a block][2 + D]: running max, sum, unnormalised accumulator
  static constexpr int64_t kRows = 16;  // query positions per work item
  int64_t Rows(int64_t block) const { return (std::min(p->seq_len, (block + 1) * kRows) - block * kRows) * (p->num_heads / p->kv_num_heads); }
};

// One (b, kv head, block of query positions, key chunk [c0, c1) of [prefix | residual]): online softmax over the
// chunk's prefix groups, each dequantized once into G x D key / value tiles shared by every query row, then its
// residual keys, both through the fused per-ISA step Table::attend (kivi_attend.h); the partial state goes to
// job.partial.
void RunItem(void* ctx, int64_t item) {
  const Job& job = *static_cast<const Job*>(ctx);
  const P& p = *job.p;
  const kv::Table& t = *job.t;
  const int64_t D = p.head_dim, H = p.num_heads, Hkv = p.kv_num_heads, S = p.seq_len, Gh = H / Hkv;
  const int64_t G = p.group, Pq = p.quant_len, Rp = p.residual_len, T = Rp + S, rb = D * p.bits / 8;
  const int bits = static_cast<int>(p.bits);
  const int64_t split = item % job.splits, blk_item = item / job.splits;
  const int64_t bh = blk_item / job.row_blocks, blk = blk_item % job.row_blocks, i0 = blk * Job::kRows;
  const int64_t b = bh / Hkv, kvh = bh % Hkv, rows = job.Rows(blk);
  const int64_t c0 = split * job.chunk, c1 = std::min(Pq + T, c0 + job.chunk);
  const float scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(D));

  std::vector<float> q(rows * D), acc(rows * D, 0.0f), m(rows, -INFINITY), l(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r / Gh, g = r % Gh;
    float* row = q.data() + r * D;
    std::memcpy(row, p.query + ((b * S + i) * H + kvh * Gh + g) * D, D * sizeof(float));
    if (p.do_rotary) Rotate(row, p, Pq + Rp + i);
    for (int64_t j = 0; j < D; ++j) row[j] *= scale;
  }
  // a tile holds whole key groups, about 128 keys, so the per-row softmax bookkeeping is paid once per tile
  const int64_t per_tile = std::max<int64_t>(1, 128 / G), tile = std::max<int64_t>(per_tile * G, 64);
  // the tiles are written before they are read: no zero fill (value-initialised vectors cost a memset per item)
  std::unique_ptr<float[]> tiles(new float[2 * tile * D + tile + 16]);
  float* const kt = tiles.get();
  float* const vt = kt + tile * D;
  float* const sc = vt + tile * D;
  std::vector<float> vs(D), vz(D);
  std::vector<int64_t> lim(rows);
  const int64_t kvbase = b * Hkv + kvh;
  // the quantized prefix in [c0, c1), up to per_tile key groups at a time (chunks are group-aligned)
  const int64_t g_end = std::min(c1, Pq) / G;
  for (int64_t g0 = c0 / G; g0 < g_end; g0 += per_tile) {
    const int64_t ng = std::min(per_tile, g_end - g0);
    for (int64_t g = g0; g < g0 + ng; ++g) {
      const float* kp = p.key_params + (kvbase * (Pq / G) + g) * 2 * D;
      const int64_t tok0 = kvbase * Pq + g * G;
      float* kg = kt + (g - g0) * G * D;
      float* vg = vt + (g - g0) * G * D;
      t.unpack_keys(p.key_codes + tok0 * rb, G, kp, kp + D, D, bits, kg);
      if (G % 8 == 0) {
        t.unpack_values(p.value_codes + tok0 * rb, G, p.value_params + tok0 * 2 * (D / G), D, G, bits, vg);
      } else {
        for (int64_t k = 0; k < G; ++k) {
          ValueRow(p.value_params + (tok0 + k) * 2 * (D / G), D, G, vs.data(), vz.data());
          t.unpack_row(p.value_codes + (tok0 + k) * rb, vs.data(), vz.data(), D, bits, vg + k * D);
        }
      }
    }
    t.attend(q.data(), rows, kt, vt, ng * G, D, nullptr, m.data(), l.data(), acc.data(), sc);
  }
  // the fp32 residual in [c0, c1) (past residual, then the call's tokens: causal)
  const float* pk = p.present_key + kvbase * T * D;
  const float* pv = p.present_value + kvbase * T * D;
  for (int64_t k0 = std::max<int64_t>(c0 - Pq, 0); k0 < c1 - Pq; k0 += tile) {
    const int64_t n = std::min(tile, c1 - Pq - k0);
    for (int64_t r = 0; r < rows; ++r) lim[r] = Rp + i0 + r / Gh + 1 - k0;
    t.attend(q.data(), rows, pk + k0 * D, pv + k0 * D, n, D, lim.data(), m.data(), l.data(), acc.data(), sc);
  }
  float* out = job.partial + item * (Job::kRows * Gh) * (2 + D);
  for (int64_t r = 0; r < rows; ++r) {
    out[r * (2 + D)] = m[r];
    out[r * (2 + D) + 1] = l[r];
    std::memcpy(out + r * (2 + D) + 2, acc.data() + r * D, D * sizeof(float));
  }
}

// output = sum_c acc_c e^(m_c - M) / sum_c l_c e^(m_c - M), M = max_c m_c, over the key chunks of each row.
void Merge(const Job& job) {
  const P& p = *job.p;
  const int64_t D = p.head_dim, H = p.num_heads, Hkv = p.kv_num_heads, S = p.seq_len, Gh = H / Hkv;
  const int64_t stride = Job::kRows * Gh * (2 + D);
  std::vector<float> o(D);
  for (int64_t bh = 0; bh < p.batch * Hkv; ++bh)
    for (int64_t blk = 0; blk < job.row_blocks; ++blk) {
      const float* base = job.partial + (bh * job.row_blocks + blk) * job.splits * stride;
      for (int64_t r = 0; r < job.Rows(blk); ++r) {
        float M = -INFINITY;
        for (int64_t c = 0; c < job.splits; ++c) M = std::max(M, base[c * stride + r * (2 + D)]);
        float L = 0.0f;
        std::fill(o.begin(), o.end(), 0.0f);
        for (int64_t c = 0; c < job.splits; ++c) {
          const float* st = base + c * stride + r * (2 + D);
          if (st[0] == -INFINITY) continue;  // the chunk held no key this row sees
          const float w = std::exp(st[0] - M);
          L += st[1] * w;
          for (int64_t j = 0; j < D; ++j) o[j] += st[2 + j] * w;
        }
        const int64_t i = blk * Job::kRows + r / Gh, h = (bh % Hkv) * Gh + r % Gh, b = bh / Hkv;
        float* out = p.output + ((b * S + i) * H + h) * D;
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        for (int64_t j = 0; j < D; ++j) out[j] = o[j] * inv;
      }
    }
}

}  // namespace

extern "C" longctx_status longctx_kivi_attention(const longctx_kivi_attention_params* p, char* err, size_t err_len) {
  auto fail = [&](longctx_status st, const std::string& msg) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", msg.c_str());
    return st;
  };
  if (p == nullptr) return fail(LONGCTX_INVALID_ARGUMENT, "params is null");
  const std::string why = Check(*p);
  if (!why.empty()) return fail(LONGCTX_INVALID_ARGUMENT, why);
  const kv::Table* t = longctx::dispatch::Select(kTables);
  if (t == nullptr) return fail(LONGCTX_ISA_REFUSED, longctx_isa_choice_error());
  const longctx_status st = Guard([&] {
    const int64_t D = p->head_dim, Hkv = p->kv_num_heads, S = p->seq_len, Rp = p->residual_len, T = Rp + S;
    // present = past residual ++ the call's keys (rotated at their positions) and values, [B, Hkv, T, D]
    for (int64_t b = 0; b < p->batch; ++b)
      for (int64_t h = 0; h < Hkv; ++h) {
        float* pk = p->present_key + (b * Hkv + h) * T * D;
        float* pv = p->present_value + (b * Hkv + h) * T * D;
        if (Rp > 0) {
          std::memcpy(pk, p->past_key + (b * Hkv + h) * Rp * D, Rp * D * sizeof(float));
          std::memcpy(pv, p->past_value + (b * Hkv + h) * Rp * D, Rp * D * sizeof(float));
        }
        for (int64_t i = 0; i < S; ++i) {
          std::memcpy(pk + (Rp + i) * D, p->key + ((b * S + i) * Hkv + h) * D, D * sizeof(float));
          std::memcpy(pv + (Rp + i) * D, p->value + ((b * S + i) * Hkv + h) * D, D * sizeof(float));
          if (p->do_rotary) Rotate(pk + (Rp + i) * D, *p, p->quant_len + Rp + i);
        }
      }
    // Work: (b, kv head, 16 query positions) items, each split over key chunks of >= kMinChunk keys when there are
    // fewer items than kWideItems (decode: one item per kv head would leave threads idle), merged by log-sum-exp.
    constexpr int64_t kMinChunk = 1024, kWideItems = 16;
    const int64_t row_blocks = (S + Job::kRows - 1) / Job::kRows, base_items = p->batch * Hkv * row_blocks;
    const int64_t keys = p->quant_len + T, G = p->group;
    int64_t splits = base_items >= kWideItems ? 1 : std::max<int64_t>(1, std::min(kWideItems / base_items, keys / kMinChunk));
    int64_t chunk = (keys + splits - 1) / splits;
    chunk = (chunk + G - 1) / G * G;  // group-aligned: a chunk never cuts a key group
    splits = (keys + chunk - 1) / chunk;
    const int64_t items = base_items * splits;
    std::vector<float> partial(static_cast<size_t>(items * Job::kRows * (p->num_heads / Hkv) * (2 + D)));
    Job job{p, t, row_blocks, splits, chunk, partial.data()};
    if (p->parallel_for != nullptr) p->parallel_for(p->executor, items, &RunItem, &job);
    else
      for (int64_t i = 0; i < items; ++i) RunItem(&job, i);
    Merge(job);
    return LONGCTX_OK;
  });
  if (st != LONGCTX_OK) return fail(st, st == LONGCTX_OUT_OF_MEMORY ? "out of memory" : "internal error");
  return LONGCTX_OK;
}
