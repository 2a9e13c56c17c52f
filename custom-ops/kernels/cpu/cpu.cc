// CPU feature detection and the ISA choice (longctx/cpu.h).
//
// Features come from cpuid leaf 1 (ECX: FMA bit 12, OSXSAVE bit 27, AVX bit 28, F16C bit 29) and leaf 7
// sub-leaf 0 (EBX: AVX2 bit 5, AVX512F 16, AVX512DQ 17, AVX512BW 30, AVX512VL 31), masked by the state
// the OS saves (XGETBV(0): bits 1-2 for XMM/YMM, bits 5-7 for opmask/ZMM): Intel SDM vol. 2A "CPUID",
// and vol. 1 section 13.3 "Enabling the XSAVE feature set". A CPU with AVX-512 under an OS that does
// not save ZMM state reports no AVX-512 here.
#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string>

#include "longctx/cpu.h"

namespace {

uint64_t Xgetbv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

longctx_cpu_features Detect() {
  longctx_cpu_features f{};
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u, avx = (c >> 28) & 1u;
  if (!osxsave || !avx) return f;  // no AVX state: nothing beyond the baseline is usable
  const uint64_t xcr0 = Xgetbv0();
  const bool ymm_state = (xcr0 & 0x6u) == 0x6u;
  const bool zmm_state = ymm_state && (xcr0 & 0xE0u) == 0xE0u;
  if (!ymm_state) return f;
  f.fma = (c >> 12) & 1u;
  f.f16c = (c >> 29) & 1u;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1u;
    if (zmm_state) {
      f.avx512f = (b >> 16) & 1u;
      f.avx512dq = (b >> 17) & 1u;
      f.avx512bw = (b >> 30) & 1u;
      f.avx512vl = (b >> 31) & 1u;
    }
  }
  return f;
}

const longctx_cpu_features& Features() {
  static const longctx_cpu_features f = Detect();
  return f;
}

// What each path needs, as (name, have) pairs; the missing ones are listed in refusals.
std::string Missing(longctx_isa isa) {
  const longctx_cpu_features& f = Features();
  std::string out;
  auto need = [&](const char* name, int have) {
    if (!have) out += (out.empty() ? "" : " ") + std::string(name);
  };
  if (isa == LONGCTX_ISA_AVX2 || isa == LONGCTX_ISA_AVX512) {
    need("avx2", f.avx2);
    need("fma", f.fma);
    need("f16c", f.f16c);
  }
  if (isa == LONGCTX_ISA_AVX512) {
    need("avx512f", f.avx512f);
    need("avx512bw", f.avx512bw);
    need("avx512dq", f.avx512dq);
    need("avx512vl", f.avx512vl);
  }
  return out;
}

bool Supported(longctx_isa isa) { return Missing(isa).empty(); }

std::string SupportedList() {
  std::string out;
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    auto isa = static_cast<longctx_isa>(i);
    if (Supported(isa)) out += (out.empty() ? "" : " ") + std::string(longctx_isa_name(isa));
  }
  return out;
}

struct LoadChoice {
  longctx_isa isa = LONGCTX_ISA_SCALAR;
  std::string error;  // empty: fine
};

LoadChoice Choose() {
  LoadChoice c;
  c.isa = longctx_isa_best();
  const char* env = std::getenv("LONGCTX_ISA");
  if (env == nullptr || *env == '\0') return c;
  longctx_isa asked;
  if (!longctx_isa_parse(env, &asked)) {
    c.error = std::string("LONGCTX_ISA='") + env +
              "' is not an ISA path; set it to one of: scalar avx2 avx512 (this CPU supports: " + SupportedList() +
              "), or unset it";
    return c;
  }
  const std::string missing = Missing(asked);
  if (!missing.empty()) {
    c.error = std::string("LONGCTX_ISA=") + longctx_isa_name(asked) + " asks for a path this CPU cannot run (it lacks " +
              missing + "); unset LONGCTX_ISA or set it to one of: " + SupportedList();
    return c;
  }
  c.isa = asked;
  return c;
}

const LoadChoice& Loaded() {
  static const LoadChoice c = Choose();
  return c;
}

// -1: no programmatic override. Constant-initialised, so safe from any static initialiser.
std::atomic<int> g_override{-1};

}  // namespace

extern "C" {

longctx_cpu_features longctx_cpu_detect(void) { return Features(); }

const char* longctx_isa_name(longctx_isa isa) {
  switch (isa) {
    case LONGCTX_ISA_SCALAR: return "scalar";
    case LONGCTX_ISA_AVX2: return "avx2";
    case LONGCTX_ISA_AVX512: return "avx512";
  }
  return nullptr;
}

int longctx_isa_parse(const char* name, longctx_isa* out) {
  if (name == nullptr || out == nullptr) return 0;
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    const char* n = longctx_isa_name(static_cast<longctx_isa>(i));
    size_t k = 0;
    while (n[k] != '\0' && name[k] != '\0' &&
           std::tolower(static_cast<unsigned char>(name[k])) == static_cast<unsigned char>(n[k])) {
      ++k;
    }
    if (n[k] == '\0' && name[k] == '\0') {
      *out = static_cast<longctx_isa>(i);
      return 1;
    }
  }
  return 0;
}

int longctx_isa_supported(longctx_isa isa, char* missing, int missing_size) {
  if (longctx_isa_name(isa) == nullptr) return 0;
  const std::string m = Missing(isa);
  if (missing != nullptr && missing_size > 0) {
    const size_t n = std::min(m.size(), static_cast<size_t>(missing_size - 1));
    std::memcpy(missing, m.data(), n);
    missing[n] = '\0';
  }
  return m.empty() ? 1 : 0;
}

longctx_isa longctx_isa_best(void) {
  if (Supported(LONGCTX_ISA_AVX512)) return LONGCTX_ISA_AVX512;
  if (Supported(LONGCTX_ISA_AVX2)) return LONGCTX_ISA_AVX2;
  return LONGCTX_ISA_SCALAR;
}

longctx_isa longctx_isa_active(void) {
  const int o = g_override.load(std::memory_order_acquire);
  return o >= 0 ? static_cast<longctx_isa>(o) : Loaded().isa;
}

const char* longctx_isa_choice_error(void) {
  if (g_override.load(std::memory_order_acquire) >= 0) return nullptr;
  const LoadChoice& c = Loaded();
  return c.error.empty() ? nullptr : c.error.c_str();
}

longctx_status longctx_isa_set(longctx_isa isa) {
  if (longctx_isa_name(isa) == nullptr) return LONGCTX_INVALID_ARGUMENT;
  if (!Supported(isa)) return LONGCTX_ISA_REFUSED;
  g_override.store(static_cast<int>(isa), std::memory_order_release);
  return LONGCTX_OK;
}

void longctx_isa_reset(void) { g_override.store(-1, std::memory_order_release); }

}  // extern "C"
