// Status codes returned by every longctx kernel entry point. The kernel API is plain C: no
// exceptions cross it, no ORT types appear in it; callers (ort/ wrappers, tests, the bench)
// turn a non-OK status into their own error.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum longctx_status {
  LONGCTX_OK = 0,
  LONGCTX_INVALID_ARGUMENT = 1,  // a null pointer, a negative size, a stride smaller than the row
  LONGCTX_ISA_REFUSED = 2,       // the ISA asked for (LONGCTX_ISA / longctx_isa_set) is not usable here
  LONGCTX_OUT_OF_MEMORY = 3,     // scratch allocation failed
  LONGCTX_INTERNAL = 4,          // a bug: an exception escaped a kernel body
} longctx_status;

// "ok", "invalid argument", ...; never NULL.
const char* longctx_status_name(longctx_status status);

#ifdef __cplusplus
}  // extern "C"
#endif
