// Per-KV-head sparse prefill attributes of longctx.LongAttention (long_attention_heads.h): read, checked, and turned
// into the kernel's longctx_la_head array (kernels/include/longctx/long_attention.h says why per KV head).
#include "long_attention_heads.h"

#include <string>

#include "ort_helpers.h"

namespace longctx::ort {
namespace {

// An int64 / float array attribute, or false when absent.
template <typename T>
bool ArrayAttr(const OrtKernelInfo* info, const char* name, std::vector<T>* out) {
  size_t size = 0;
  auto get = [&](T* data) {
    if constexpr (std::is_same_v<T, float>) return Ort::GetApi().KernelInfoGetAttributeArray_float(info, name, data, &size);
    else return Ort::GetApi().KernelInfoGetAttributeArray_int64(info, name, data, &size);
  };
  OrtStatus* st = get(nullptr);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return false;
  }
  out->resize(size);
  if (size > 0) Ort::ThrowOnError(get(out->data()));
  return true;
}

bool IsHeadPattern(int64_t id) {
  return id == LONGCTX_LA_DENSE || id == LONGCTX_LA_TRISHAPE || id == LONGCTX_LA_VSLASH || id == LONGCTX_LA_XATTN ||
         id == LONGCTX_LA_BLOCK;
}

}  // namespace

std::vector<longctx_la_head> ReadHeadAttrs(const OrtKernelInfo* info, const char* op, longctx_la_pattern layer_pattern,
                                           int64_t layer_sink, int64_t layer_window, const longctx_la_sparse& layer_sparse,
                                           int64_t kv_num_heads) {
  struct IntArray { const char* name; std::vector<int64_t> v; bool present; };
  IntArray ints[] = {{"head_pattern", {}, false}, {"head_vertical", {}, false}, {"head_slash", {}, false},
                     {"head_sink", {}, false},    {"head_window", {}, false},   {"head_last", {}, false},
                     {"head_min_len", {}, false}};
  std::vector<float> threshold;
  for (IntArray& a : ints) a.present = ArrayAttr(info, a.name, &a.v);
  const bool has_threshold = ArrayAttr(info, "head_threshold", &threshold);
  if (!ints[0].present) {
    for (const IntArray& a : ints)
      if (a.present) Fail(op, std::string("attribute '") + a.name + "' needs 'head_pattern' (one pattern id per kv head)");
    if (has_threshold) Fail(op, "attribute 'head_threshold' needs 'head_pattern' (one pattern id per kv head)");
    return {};
  }
  const bool sparse_layer = layer_pattern == LONGCTX_LA_TRISHAPE || layer_pattern == LONGCTX_LA_VSLASH ||
                            layer_pattern == LONGCTX_LA_XATTN || layer_pattern == LONGCTX_LA_BLOCK;
  if (!sparse_layer)
    Fail(op, "attribute 'head_pattern' needs a sparse layer pattern (trishape, vslash, xattn or block: its min_len gates every head)");
  const size_t n = static_cast<size_t>(kv_num_heads);
  for (const IntArray& a : ints)
    if (a.present && a.v.size() != n)
      Fail(op, std::string("attribute '") + a.name + "' has " + std::to_string(a.v.size()) + " values, expected one per kv head (" +
                   std::to_string(n) + ")");
  if (has_threshold && threshold.size() != n)
    Fail(op, "attribute 'head_threshold' has " + std::to_string(threshold.size()) + " values, expected one per kv head (" +
                 std::to_string(n) + ")");

  std::vector<longctx_la_head> heads(n);
  for (size_t h = 0; h < n; ++h) {
    auto at = [&](int i, int64_t fallback) { return ints[i].present ? ints[i].v[h] : fallback; };
    const std::string who = "kv head " + std::to_string(h) + ": ";
    const int64_t id = ints[0].v[h];
    if (!IsHeadPattern(id))
      Fail(op, who + "head_pattern id " + std::to_string(id) + " is unknown (valid: 0 dense, 3 trishape, 4 vslash, 5 xattn, 6 block)");
    longctx_la_head& hd = heads[h];
    hd.pattern = static_cast<longctx_la_pattern>(id);
    hd.sparse = layer_sparse;
    hd.sparse.vertical = at(1, layer_sparse.vertical);
    hd.sparse.slash = at(2, layer_sparse.slash);
    hd.sink = at(3, layer_sink);
    hd.window = at(4, layer_window);
    hd.sparse.last = at(5, layer_sparse.last);
    hd.sparse.min_len = at(6, layer_sparse.min_len);
    if (has_threshold) hd.sparse.threshold = threshold[h];
    if (hd.sparse.vertical < 0 || hd.sparse.slash < 0 || hd.sink < 0 || hd.sparse.last < 0 || hd.sparse.min_len < 0 || hd.window < 1)
      Fail(op, who + "head_vertical, head_slash, head_sink, head_last and head_min_len must be >= 0 and head_window >= 1 (got vertical=" +
                   std::to_string(hd.sparse.vertical) + ", slash=" + std::to_string(hd.sparse.slash) + ", sink=" +
                   std::to_string(hd.sink) + ", window=" + std::to_string(hd.window) + ", last=" + std::to_string(hd.sparse.last) +
                   ", min_len=" + std::to_string(hd.sparse.min_len) + ")");
    if (!(hd.sparse.threshold > 0.f && hd.sparse.threshold <= 1.f))
      Fail(op, who + "head_threshold must be in (0, 1], got " + std::to_string(hd.sparse.threshold));
  }
  return heads;
}

}  // namespace longctx::ort
