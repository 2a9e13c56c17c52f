// ORT wrapper of the LongAttention kernel: attributes, shape checks, GQA-compatible present shapes,
// ORT's intra-op thread pool (KernelContext_ParallelFor) as the kernel's executor.
#include "long_attention_op.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <sstream>
#include <thread>
#include <vector>

#include "longctx/long_attention.h"
#include "long_attention_heads.h"
#include "ort_helpers.h"

#define LONGCTX_EXPORT __attribute__((visibility("default")))

namespace longctx::ort {
namespace {

constexpr const char* kOp = "longctx.LongAttention";

[[noreturn]] void Fail(const std::string& msg) { longctx::ort::Fail(kOp, msg); }

bool TryInt(const OrtKernelInfo* info, const char* name, int64_t* v) {
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, v);
  if (st == nullptr) return true;
  Ort::GetApi().ReleaseStatus(st);
  return false;
}
int64_t IntAttr(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = fallback;
  return TryInt(info, name, &v) ? v : fallback;
}
float FloatAttr(const OrtKernelInfo* info, const char* name, float fallback) {
  float v = fallback;
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_float(info, name, &v);
  if (st == nullptr) return v;
  Ort::GetApi().ReleaseStatus(st);
  return fallback;
}
bool StringAttr(const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return false;
  }
  std::string s(size, '\0');
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_string(info, name, s.data(), &size));
  if (!s.empty() && s.back() == '\0') s.pop_back();
  *out = s;
  return true;
}

struct Config {
  int64_t num_heads = 0, kv_num_heads = 0;
  float scale = 0.f;
  bool do_rotary = false, interleaved = false;
  longctx_la_pattern pattern = LONGCTX_LA_DENSE;
  int64_t sink = 0, window = 0, chunk_size = 0, local_size = 0, trained_context = 0;
  longctx_la_sparse sparse{};  // trishape / vslash / xattn (defaults: SparseDefaults)
  int isa_override = -1;  // -1: the library's active path
  std::vector<longctx_la_head> heads;  // per-kv-head settings (long_attention_heads.h); empty: the layer's
};

// Defaults of the sparse prefill attributes (the compiler writes them explicitly; see custom-ops/README.md).
// min_len: below it a call runs dense (README: chosen by measurement with longctx_kernel_bench / lcc bench).
longctx_la_sparse SparseDefaults(longctx_la_pattern pattern) {
  longctx_la_sparse s{};
  s.min_len = pattern == LONGCTX_LA_TRISHAPE || pattern == LONGCTX_LA_BLOCK ? 2048 : 8192;
  s.vertical = 1000;
  s.slash = 4096;
  s.threshold = 0.9f;
  s.stride = 8;
  s.last = 64;
  s.local_blocks = 16;
  s.vert_stride = 8;
  return s;
}

Config ReadConfig(const OrtKernelInfo* info) {
  Config c;
  if (!TryInt(info, "num_heads", &c.num_heads)) Fail("required int attribute 'num_heads' is missing");
  if (!TryInt(info, "kv_num_heads", &c.kv_num_heads)) Fail("required int attribute 'kv_num_heads' is missing");
  if (c.num_heads <= 0 || c.kv_num_heads <= 0 || c.num_heads % c.kv_num_heads != 0)
    Fail("num_heads (" + std::to_string(c.num_heads) + ") must be a positive multiple of kv_num_heads (" +
         std::to_string(c.kv_num_heads) + ")");
  // GroupQueryAttention attributes this op does not implement: refuse rather than silently ignore them.
  if (IntAttr(info, "local_window_size", -1) != -1)
    Fail("attribute 'local_window_size' is not supported (use pattern 'streaming' with sink=0, window=N, or keep GroupQueryAttention)");
  if (FloatAttr(info, "softcap", 0.f) != 0.f) Fail("attribute 'softcap' is not supported (keep GroupQueryAttention)");
  if (IntAttr(info, "smooth_softmax", 0) != 0) Fail("attribute 'smooth_softmax' is not supported (keep GroupQueryAttention)");
  c.scale = FloatAttr(info, "scale", 0.f);
  c.do_rotary = IntAttr(info, "do_rotary", 0) != 0;
  c.interleaved = IntAttr(info, "rotary_interleaved", 0) != 0;
  std::string pattern = "dense";
  StringAttr(info, "pattern", &pattern);
  if (pattern == "dense") c.pattern = LONGCTX_LA_DENSE;
  else if (pattern == "streaming") c.pattern = LONGCTX_LA_STREAMING;
  else if (pattern == "dca") c.pattern = LONGCTX_LA_DCA;
  else if (pattern == "trishape") c.pattern = LONGCTX_LA_TRISHAPE;
  else if (pattern == "vslash") c.pattern = LONGCTX_LA_VSLASH;
  else if (pattern == "xattn") c.pattern = LONGCTX_LA_XATTN;
  else if (pattern == "block") c.pattern = LONGCTX_LA_BLOCK;
  else Fail("unknown pattern '" + pattern + "' (valid: dense, streaming, dca, trishape, vslash, xattn, block)");

  // Pattern attributes: required by their pattern(s), rejected by the others. Owners are bit masks.
  constexpr unsigned kStreaming = 1u << LONGCTX_LA_STREAMING, kDca = 1u << LONGCTX_LA_DCA;
  constexpr unsigned kTri = 1u << LONGCTX_LA_TRISHAPE, kVs = 1u << LONGCTX_LA_VSLASH, kXa = 1u << LONGCTX_LA_XATTN;
  constexpr unsigned kBlk = 1u << LONGCTX_LA_BLOCK;
  const bool sparse = ((kTri | kVs | kXa | kBlk) >> c.pattern) & 1u;
  if (sparse) {
    c.sparse = SparseDefaults(c.pattern);
    c.sink = 64;
    c.window = 1024;
  }
  struct PatternAttr { const char* name; unsigned owners; int64_t* slot; bool required; };
  const PatternAttr attrs[] = {
      {"sink", kStreaming | kTri, &c.sink, false},             {"window", kStreaming | kTri, &c.window, c.pattern == LONGCTX_LA_STREAMING},
      {"chunk_size", kDca, &c.chunk_size, true},               {"local_size", kDca, &c.local_size, true},
      {"trained_context", kDca, &c.trained_context, false},    {"min_len", kTri | kVs | kXa | kBlk, &c.sparse.min_len, false},
      {"last", kTri, &c.sparse.last, false},                   {"vertical", kVs, &c.sparse.vertical, false},
      {"slash", kVs, &c.sparse.slash, false},                  {"stride", kXa, &c.sparse.stride, false},
      {"local_blocks", kBlk, &c.sparse.local_blocks, false},   {"vert_stride", kBlk, &c.sparse.vert_stride, false},
  };
  const char* kOwnersText =
      "' (dense: none; streaming: sink, window; dca: chunk_size, local_size, trained_context; trishape: sink, window, "
      "last, min_len; vslash: vertical, slash, min_len; xattn: threshold, stride, min_len; block: local_blocks, vert_stride, "
      "min_len)";
  for (const PatternAttr& a : attrs) {
    const bool owned = (a.owners >> c.pattern) & 1u;
    const bool present = TryInt(info, a.name, a.slot);
    if (present && !owned) Fail(std::string("attribute '") + a.name + "' does not apply to pattern '" + pattern + kOwnersText);
    if (!present && a.required && owned)
      Fail(std::string("pattern '") + pattern + "' needs int attribute '" + a.name + "'");
  }
  {
    float threshold = 0.f;
    OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_float(info, "threshold", &threshold);
    const bool present = st == nullptr;
    if (st != nullptr) Ort::GetApi().ReleaseStatus(st);
    if (present && c.pattern != LONGCTX_LA_XATTN)
      Fail(std::string("attribute 'threshold' does not apply to pattern '") + pattern + kOwnersText);
    if (present) c.sparse.threshold = threshold;
  }
  if (sparse && (c.sparse.min_len < 0 || c.sparse.vertical < 0 || c.sparse.slash < 0 || c.sparse.last < 0 ||
                 c.sink < 0 || c.window < 1 || c.sparse.local_blocks < 1 || c.sparse.vert_stride < 1))
    Fail("pattern '" + pattern + "': min_len, vertical, slash, last and sink must be >= 0, window, local_blocks and "
         "vert_stride >= 1");
  if (c.pattern == LONGCTX_LA_XATTN && !(c.sparse.threshold > 0.f && c.sparse.threshold <= 1.f))
    Fail("xattn threshold must be in (0, 1], got " + std::to_string(c.sparse.threshold));
  if (c.pattern == LONGCTX_LA_XATTN && (c.sparse.stride < 1 || 64 % c.sparse.stride != 0))
    Fail("xattn stride must divide 64 (e.g. 8 or 16), got " + std::to_string(c.sparse.stride));
  if (c.pattern == LONGCTX_LA_STREAMING && (c.sink < 0 || c.window < 1))
    Fail("streaming needs sink >= 0 and window >= 1 (got sink=" + std::to_string(c.sink) + ", window=" +
         std::to_string(c.window) + ")");
  if (c.pattern == LONGCTX_LA_DCA && (c.chunk_size <= 0 || c.local_size < 0 || c.local_size >= c.chunk_size))
    Fail("dca needs chunk_size > local_size >= 0 (got chunk_size=" + std::to_string(c.chunk_size) +
         ", local_size=" + std::to_string(c.local_size) + ")");
  if (c.pattern == LONGCTX_LA_DCA && c.trained_context < 0)
    Fail("dca trained_context must be >= 0 (0 = no softmax scale factor)");

  c.heads = ReadHeadAttrs(info, kOp, c.pattern, c.sink, c.window, c.sparse, c.kv_num_heads);

  std::string isa = "auto";
  StringAttr(info, "isa", &isa);
  if (isa != "auto") {
    longctx_isa parsed;
    if (!longctx_isa_parse(isa.c_str(), &parsed)) Fail("unknown isa '" + isa + "' (valid: auto, scalar, avx2, avx512)");
    char missing[128];
    if (!longctx_isa_supported(parsed, missing, sizeof missing))
      Fail("isa '" + isa + "' was requested but this CPU lacks " + missing);
    c.isa_override = static_cast<int>(parsed);
  }
  return c;
}

// ORT's intra-op pool as the kernel's executor.
struct OrtExecutor {
  const OrtKernelContext* context;
  static void ParallelFor(void* executor, int64_t n, longctx_task_fn fn, void* ctx) {
    struct Call { longctx_task_fn fn; void* ctx; } call{fn, ctx};
    auto tramp = [](void* u, size_t i) {
      auto* c = static_cast<Call*>(u);
      c->fn(c->ctx, static_cast<int64_t>(i));
    };
    Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(static_cast<OrtExecutor*>(executor)->context, tramp,
                                                               static_cast<size_t>(n), 0, &call));
  }
};

// Threads the kernel sizes its work split for: the session config entry kThreadsEntry (set by the
// runtime to the session's intra-op thread count, so the split matches ORT's pool), else the hardware
// concurrency. A present but malformed entry is an error, not a silent fallback.
constexpr const char* kThreadsEntry = "longctx.intra_op_threads";

int ReadThreads(const OrtKernelInfo* info) {
  const int fallback = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  OrtKeyValuePairs* kvp = nullptr;
  Ort::ThrowOnError(Ort::GetApi().KernelInfo_GetConfigEntries(info, &kvp));
  const char* raw = kvp != nullptr ? Ort::GetApi().GetKeyValue(kvp, kThreadsEntry) : nullptr;
  const std::string value = raw != nullptr ? raw : "";
  if (kvp != nullptr) Ort::GetApi().ReleaseKeyValuePairs(kvp);
  if (raw == nullptr || value.empty()) return fallback;
  size_t used = 0;
  long n = 0;
  try {
    n = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || n < 0 || n > 4096)
    Fail(std::string("session config entry ") + kThreadsEntry + " = '" + value +
         "' is not a thread count: set an integer 0..4096 (0 = hardware concurrency)");
  return n == 0 ? fallback : static_cast<int>(n);
}

struct LongAttentionKernel {
  LongAttentionKernel(const OrtKernelInfo* info, ONNXTensorElementDataType type)
      : config(ReadConfig(info)), threads(ReadThreads(info)), type(type) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    try {
      Compute(raw);
      return nullptr;
    } catch (...) {
      return OrtStatusFromCurrentException(kOp);
    }
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    const size_t nin = ctx.GetInputCount();
    auto input = [&](size_t i) -> Ort::ConstValue {
      if (i >= nin) return Ort::ConstValue{nullptr};
      return ctx.GetInput(i);
    };
    auto shape = [](const Ort::ConstValue& v) { return v.GetTensorTypeAndShapeInfo().GetShape(); };
    const char* names[] = {"query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length",
                           "cos_cache", "sin_cache"};
    for (size_t i : {0, 1, 2, 5, 6})
      if (!input(i)) Fail(std::string("required input ") + std::to_string(i) + " (" + names[i] + ") is missing");

    const Ort::ConstValue q = input(0), k = input(1), v = input(2), pk = input(3), pv = input(4);
    const Ort::ConstValue seqlens = input(5), total_len = input(6), cosv = input(7), sinv = input(8);
    const int64_t H = config.num_heads, Hkv = config.kv_num_heads;
    const auto qs = shape(q), ks = shape(k), vs = shape(v);
    if (qs.size() != 3) Fail("query must be rank 3 [B, S, num_heads*head_size], got " + ShapeStr(qs));
    const int64_t B = qs[0], S = qs[1];
    if (qs[2] % H != 0)
      Fail("query hidden size " + std::to_string(qs[2]) + " is not divisible by num_heads " + std::to_string(H));
    const int64_t D = qs[2] / H;
    const std::vector<int64_t> kv_expected{B, S, Hkv * D};
    if (ks != kv_expected) Fail("key shape " + ShapeStr(ks) + " does not match expected " + ShapeStr(kv_expected));
    if (vs != kv_expected) Fail("value shape " + ShapeStr(vs) + " does not match expected " + ShapeStr(kv_expected));
    if (D % 16 != 0 || D < 16 || D > 256)
      Fail("head_dim " + std::to_string(D) + " is not supported (supported: multiples of 16 from 16 to 256)");

    if (static_cast<bool>(pk) != static_cast<bool>(pv)) Fail("past_key and past_value must be given together");
    int64_t P = 0;
    if (pk) {
      const auto pks = shape(pk), pvs = shape(pv);
      if (pks.size() != 4) Fail("past_key must be rank 4 [B, kv_num_heads, P, head_size], got " + ShapeStr(pks));
      P = pks[2];
      const std::vector<int64_t> past_expected{B, Hkv, P, D};
      if (pks != past_expected) Fail("past_key shape " + ShapeStr(pks) + " does not match expected " + ShapeStr(past_expected));
      if (pvs != past_expected) Fail("past_value shape " + ShapeStr(pvs) + " does not match expected " + ShapeStr(past_expected));
    }
    const auto ss = shape(seqlens);
    if (seqlens.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || ss != std::vector<int64_t>{B})
      Fail("seqlens_k must be int32 [B] = [" + std::to_string(B) + "], got " + ShapeStr(ss));
    if (total_len.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 ||
        total_len.GetTensorTypeAndShapeInfo().GetElementCount() != 1)
      Fail("total_sequence_length must be an int32 scalar");
    const int64_t total_sequence_length = *total_len.GetTensorData<int32_t>();

    int64_t R = 0, max_pos = 0;
    if (config.do_rotary) {
      if (!cosv || !sinv) Fail("do_rotary=1 needs cos_cache (input 7) and sin_cache (input 8)");
      const auto cs = shape(cosv), sn = shape(sinv);
      if (cs.size() != 2 || cs != sn)
        Fail("cos_cache and sin_cache must both be [max_pos, rotary_dim/2], got " + ShapeStr(cs) + " and " + ShapeStr(sn));
      max_pos = cs[0];
      R = cs[1] * 2;
      if (R > D) Fail("rotary_dim " + std::to_string(R) + " (2 * cos_cache.shape[1]) exceeds head_size " + std::to_string(D));
    }

    const int64_t present_len = std::max(total_sequence_length, P);
    const std::vector<int64_t> out_shape{B, S, H * D}, present_shape{B, Hkv, present_len, D};
    Ort::UnownedValue out = ctx.GetOutput(0, out_shape);
    Ort::UnownedValue prk = ctx.GetOutput(1, present_shape);
    Ort::UnownedValue prv = ctx.GetOutput(2, present_shape);
    if (!prk || !prv) Fail("outputs 1 (present_key) and 2 (present_value) are required");
    float* lse = nullptr;
    if (ctx.GetOutputCount() > 3) {
      Ort::UnownedValue l = ctx.GetOutput(3, std::vector<int64_t>{B, H, S});
      if (l) lse = l.GetTensorMutableData<float>();
    }

    longctx_la_params p{};
    p.dtype = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ? LONGCTX_F16 : LONGCTX_F32;
    p.batch = B; p.seq_len = S; p.num_heads = H; p.kv_num_heads = Hkv; p.head_dim = D;
    p.query = q.GetTensorRawData(); p.key = k.GetTensorRawData(); p.value = v.GetTensorRawData();
    p.past_key = pk ? pk.GetTensorRawData() : nullptr;
    p.past_value = pv ? pv.GetTensorRawData() : nullptr;
    p.past_len = P;
    p.present_key = prk.GetTensorMutableRawData();
    p.present_value = prv.GetTensorMutableRawData();
    p.present_len = present_len;
    p.seqlens_k = seqlens.GetTensorData<int32_t>();
    p.output = out.GetTensorMutableRawData();
    p.lse = lse;
    p.do_rotary = config.do_rotary; p.rotary_interleaved = config.interleaved;
    p.cos_cache = config.do_rotary ? cosv.GetTensorRawData() : nullptr;
    p.sin_cache = config.do_rotary ? sinv.GetTensorRawData() : nullptr;
    p.rotary_dim = R; p.max_pos = max_pos;
    p.scale = config.scale; p.pattern = config.pattern;
    p.sink = config.sink; p.window = config.window;
    p.chunk_size = config.chunk_size; p.local_size = config.local_size; p.trained_context = config.trained_context;
    p.isa_override = config.isa_override;
    p.sparse = config.sparse;
    p.heads = config.heads.empty() ? nullptr : config.heads.data();
    longctx_la_stats stats{};
    p.stats = &stats;
    OrtExecutor executor{raw};
    p.parallel_for = &OrtExecutor::ParallelFor;
    p.executor = &executor;
    p.num_threads_hint = threads;
    char err[512] = {0};
    const longctx_status st = longctx_long_attention(&p, err, sizeof err);
    if (st != LONGCTX_OK)
      throw Ort::Exception(std::string(kOp) + ": " + err,
                           st == LONGCTX_INVALID_ARGUMENT || st == LONGCTX_ISA_REFUSED ? ORT_INVALID_ARGUMENT : ORT_RUNTIME_EXCEPTION);
    // Bad input from issue 10: a budget larger than the sequence runs dense; said once per kernel.
    if (stats.covered_heads > 0 && !covered_noted.exchange(true))
      std::fprintf(stderr, "lcc: note: LongAttention pattern '%s'%s: the budget covers every key of this %lld-token prompt; it runs dense\n",
                   PatternName(config.pattern),
                   config.heads.empty() ? "" : (" with per-kv-head budgets (" + std::to_string(stats.covered_heads) + " heads)").c_str(),
                   static_cast<long long>(S));
  }

  static const char* PatternName(longctx_la_pattern p) {
    switch (p) {
      case LONGCTX_LA_TRISHAPE: return "trishape";
      case LONGCTX_LA_VSLASH: return "vslash";
      case LONGCTX_LA_XATTN: return "xattn";
      case LONGCTX_LA_BLOCK: return "block";
      default: return "dense";
    }
  }
  std::atomic<bool> covered_noted{false};

  Config config;
  int threads;
  ONNXTensorElementDataType type;
};

struct LongAttentionOp : Ort::CustomOpBase<LongAttentionOp, LongAttentionKernel, true> {
  explicit LongAttentionOp(ONNXTensorElementDataType t) : type(t) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept {
    (void)api;
    try {
      *kernel = new LongAttentionKernel(info, type);
      return nullptr;
    } catch (...) {
      return OrtStatusFromCurrentException(kOp);
    }
  }
  const char* GetName() const { return "LongAttention"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 9; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 5 || i == 6 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : type;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 || i == 4 || i == 7 || i == 8 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return i == 3 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : type; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }

  ONNXTensorElementDataType type;
};

}  // namespace

OrtCustomOp* CreateLongAttentionOp(ONNXTensorElementDataType type) { return new LongAttentionOp(type); }
void DestroyLongAttentionOp(OrtCustomOp* op) { delete static_cast<LongAttentionOp*>(op); }

}  // namespace longctx::ort

// Debug counters for tests (P/Invoke from C#): the kernel's scratch high-water mark in bytes.
extern "C" LONGCTX_EXPORT int64_t LongCtxLaScratchPeakBytes() { return longctx_la_scratch_peak_bytes(); }
extern "C" LONGCTX_EXPORT void LongCtxLaScratchReset() { longctx_la_scratch_reset(); }
