// Run-time ISA detection and the LONGCTX_ISA override, shared by every kernel with ISA variants.
#pragma once

#include <string>

namespace longctx {

enum class Isa { Scalar, Avx2, Avx512 };
enum class IsaRequest { Auto, Scalar, Avx2, Avx512 };

bool CpuHasAvx2();
bool CpuHasAvx512();
const char* IsaName(Isa isa);
// "auto" | "scalar" | "avx2" | "avx512" -> request; false for anything else.
bool ParseIsa(const char* text, IsaRequest* out);
// Auto honours LONGCTX_ISA, then picks the best the CPU has. A forced ISA the CPU lacks -> false + err.
bool ResolveIsa(IsaRequest request, Isa* out, std::string* err);

}  // namespace longctx
