// CPU feature detection (cpuid + xgetbv) and the choice of the instruction-set path every
// dispatching kernel uses.
//
// The choice is made once, on first use: the best path the CPU (and the OS, via XCR0) supports,
// unless the environment variable LONGCTX_ISA=scalar|avx2|avx512 asks for one. Asking for an
// unknown name or for a path this CPU lacks is refused, not downgraded: longctx_isa_choice_error()
// returns the message and every dispatching kernel returns LONGCTX_ISA_REFUSED.
// longctx_isa_set() overrides the choice programmatically (tests loop over the paths with it).
#pragma once

#include "longctx/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum longctx_isa {
  LONGCTX_ISA_SCALAR = 0,  // baseline x86-64 (SSE2)
  LONGCTX_ISA_AVX2 = 1,    // AVX2 + FMA + F16C
  LONGCTX_ISA_AVX512 = 2,  // AVX-512 F/BW/DQ/VL + FMA + F16C
} longctx_isa;

#define LONGCTX_ISA_COUNT 3

typedef struct longctx_cpu_features {
  int avx2, fma, f16c;                        // each 0 or 1, already masked by OS support (XCR0)
  int avx512f, avx512bw, avx512dq, avx512vl;
} longctx_cpu_features;

// Features of the CPU this process runs on (computed once).
longctx_cpu_features longctx_cpu_detect(void);

// "scalar", "avx2", "avx512"; NULL for an out-of-range value.
const char* longctx_isa_name(longctx_isa isa);

// Parses "scalar" | "avx2" | "avx512" (case-insensitive). Returns 1 and sets *out on success, else 0.
int longctx_isa_parse(const char* name, longctx_isa* out);

// 1 when this CPU can run `isa`, else 0. When 0 and `missing` is not NULL, writes the missing
// features ("avx512bw avx512vl") into missing[0..missing_size) (NUL-terminated, truncated).
int longctx_isa_supported(longctx_isa isa, char* missing, int missing_size);

// The best path this CPU supports.
longctx_isa longctx_isa_best(void);

// The path the dispatching kernels use now.
longctx_isa longctx_isa_active(void);

// NULL when the load-time choice succeeded (or was overridden by longctx_isa_set); otherwise a one-line
// message naming LONGCTX_ISA, what it asked for, what the CPU lacks and what to do.
const char* longctx_isa_choice_error(void);

// Programmatic override (tests, the bench). LONGCTX_ISA_REFUSED when the CPU lacks `isa`
// (nothing changes then), LONGCTX_INVALID_ARGUMENT for an out-of-range value.
longctx_status longctx_isa_set(longctx_isa isa);

// Drops the programmatic override: back to the load-time choice (including its error, if any).
void longctx_isa_reset(void);

#ifdef __cplusplus
}  // extern "C"
#endif
