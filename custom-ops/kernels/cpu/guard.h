// Internal: the exception boundary of the kernel entry points (the C API never throws): runs body() and maps
// std::bad_alloc to LONGCTX_OUT_OF_MEMORY and anything else to LONGCTX_INTERNAL.
#pragma once

#include <new>

#include "longctx/status.h"

namespace longctx {

template <typename F>
longctx_status Guard(F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return LONGCTX_OUT_OF_MEMORY;
  } catch (...) {
    return LONGCTX_INTERNAL;
  }
}

}  // namespace longctx
