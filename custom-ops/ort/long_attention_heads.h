// Per-KV-head sparse prefill attributes of longctx.LongAttention (issue 10 item 2, per-head calibration).
#pragma once

#include <cstdint>
#include <vector>

#include "longctx/long_attention.h"
#include "onnxruntime_cxx_api.h"

namespace longctx::ort {

// The per-kv-head settings from the optional attributes (empty when `head_pattern` is absent):
//   head_pattern   ints [kv_num_heads]: 0 dense, 3 trishape, 4 vslash, 5 xattn, 6 block (longctx_la_pattern ids)
//   head_vertical, head_slash (vslash), head_sink, head_window, head_last (trishape), head_min_len (the length gate):
//   ints [kv_num_heads]
//   head_threshold (xattn): floats [kv_num_heads]
// A head takes the layer's value (`layer_*`, the layer pattern's attributes and defaults) for an array that is absent.
// The layer's `pattern` must be a sparse one (its stride, local_blocks and vert_stride apply to every head).
// Bad lengths, unknown ids and out-of-range values are one-line errors naming the attribute and the head.
std::vector<longctx_la_head> ReadHeadAttrs(const OrtKernelInfo* info, const char* op, longctx_la_pattern layer_pattern,
                                           int64_t layer_sink, int64_t layer_window, const longctx_la_sparse& layer_sparse,
                                           int64_t kv_num_heads);

}  // namespace longctx::ort
