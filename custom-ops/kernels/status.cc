// Names of longctx_status values (longctx/status.h).
#include "longctx/status.h"

extern "C" const char* longctx_status_name(longctx_status status) {
  switch (status) {
    case LONGCTX_OK: return "ok";
    case LONGCTX_INVALID_ARGUMENT: return "invalid argument";
    case LONGCTX_ISA_REFUSED: return "ISA path refused";
    case LONGCTX_OUT_OF_MEMORY: return "out of memory";
    case LONGCTX_INTERNAL: return "internal error";
  }
  return "unknown status";
}
