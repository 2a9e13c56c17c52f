// The test functions of longctx_kernel_tests; main.cc lists them in its tables.
#pragma once

#include "check.h"

namespace longctx::test {

// Run once: the ISA machinery and the oracle itself (it has no per-ISA variants).
void CpuFeatureTests(Ctx& ctx);
void AttentionReferenceTests(Ctx& ctx);

// Run once per ISA path the CPU supports, with that path active.
void KvQuantTests(Ctx& ctx);
void KiviTests(Ctx& ctx);
void LongAttentionTests(Ctx& ctx);
void SparseAttentionTests(Ctx& ctx);

}  // namespace longctx::test
