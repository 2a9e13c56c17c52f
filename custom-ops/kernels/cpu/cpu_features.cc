// Run-time ISA selection for the kernel library: cpuid (through the compiler's __builtin_cpu_supports)
// plus the LONGCTX_ISA override (scalar | avx2 | avx512). A forced ISA the CPU lacks is reported.
#include "longctx/cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace longctx {

bool CpuHasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool ParseIsa(const char* text, IsaRequest* out) {
  if (std::strcmp(text, "auto") == 0 || text[0] == '\0') *out = IsaRequest::Auto;
  else if (std::strcmp(text, "scalar") == 0) *out = IsaRequest::Scalar;
  else if (std::strcmp(text, "avx2") == 0) *out = IsaRequest::Avx2;
  else if (std::strcmp(text, "avx512") == 0) *out = IsaRequest::Avx512;
  else return false;
  return true;
}

bool ResolveIsa(IsaRequest request, Isa* out, std::string* err) {
  if (request == IsaRequest::Auto) {
    if (const char* env = std::getenv("LONGCTX_ISA"); env != nullptr && env[0] != '\0') {
      if (!ParseIsa(env, &request)) {
        *err = std::string("LONGCTX_ISA='") + env + "' is not one of auto, scalar, avx2, avx512";
        return false;
      }
    }
  }
  switch (request) {
    case IsaRequest::Auto: *out = CpuHasAvx512() ? Isa::Avx512 : CpuHasAvx2() ? Isa::Avx2 : Isa::Scalar; return true;
    case IsaRequest::Scalar: *out = Isa::Scalar; return true;
    case IsaRequest::Avx2:
      if (!CpuHasAvx2()) { *err = "isa avx2 was requested but this CPU lacks AVX2/FMA/F16C"; return false; }
      *out = Isa::Avx2;
      return true;
    case IsaRequest::Avx512:
      if (!CpuHasAvx512()) { *err = "isa avx512 was requested but this CPU lacks AVX-512 F/BW/DQ/VL"; return false; }
      *out = Isa::Avx512;
      return true;
  }
  return false;
}

}  // namespace longctx
