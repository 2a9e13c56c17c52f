// The ISA machinery (longctx/cpu.h): names, parsing, support, the programmatic setter.
#include <cstring>

#include "longctx/cpu.h"
#include "longctx/status.h"
#include "tests.h"

namespace longctx::test {

void CpuFeatureTests(Ctx& ctx) {
  const char* names[] = {"scalar", "avx2", "avx512"};
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    longctx_isa parsed;
    CHECK(ctx, std::strcmp(longctx_isa_name(static_cast<longctx_isa>(i)), names[i]) == 0);
    CHECK(ctx, longctx_isa_parse(names[i], &parsed) == 1 && parsed == i);
  }
  longctx_isa parsed = LONGCTX_ISA_SCALAR;
  CHECK(ctx, longctx_isa_parse("AVX2", &parsed) == 1 && parsed == LONGCTX_ISA_AVX2);
  CHECK(ctx, longctx_isa_parse("sse9", &parsed) == 0);
  CHECK(ctx, longctx_isa_parse("avx", &parsed) == 0);
  CHECK(ctx, longctx_isa_parse("avx5120", &parsed) == 0);
  CHECK(ctx, longctx_isa_parse("", &parsed) == 0);
  CHECK(ctx, longctx_isa_name(static_cast<longctx_isa>(7)) == nullptr);

  // scalar is always there; the paths nest; the best one is supported.
  CHECK(ctx, longctx_isa_supported(LONGCTX_ISA_SCALAR, nullptr, 0) == 1);
  const int avx2 = longctx_isa_supported(LONGCTX_ISA_AVX2, nullptr, 0);
  const int avx512 = longctx_isa_supported(LONGCTX_ISA_AVX512, nullptr, 0);
  CHECK(ctx, !avx512 || avx2);
  CHECK(ctx, longctx_isa_supported(longctx_isa_best(), nullptr, 0) == 1);
  const longctx_cpu_features f = longctx_cpu_detect();
  CHECK(ctx, avx2 == (f.avx2 && f.fma && f.f16c));
  CHECK(ctx, avx512 == (avx2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl));

  // The missing-feature text names what is absent, and is empty for a supported path.
  char missing[64] = "x";
  CHECK(ctx, longctx_isa_supported(LONGCTX_ISA_SCALAR, missing, sizeof missing) == 1 && missing[0] == '\0');
  if (!avx512) {
    longctx_isa_supported(LONGCTX_ISA_AVX512, missing, sizeof missing);
    CHECK_MSG(ctx, std::strstr(missing, "avx512") != nullptr || std::strstr(missing, "avx2") != nullptr, "missing='%s'",
              missing);
  }

  // The setter: accepts supported paths, refuses the others without changing the active one.
  const longctx_isa before = longctx_isa_active();
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    const auto isa = static_cast<longctx_isa>(i);
    const longctx_status st = longctx_isa_set(isa);
    if (longctx_isa_supported(isa, nullptr, 0)) {
      CHECK(ctx, st == LONGCTX_OK && longctx_isa_active() == isa);
      CHECK(ctx, longctx_isa_choice_error() == nullptr);
    } else {
      CHECK(ctx, st == LONGCTX_ISA_REFUSED);
      CHECK(ctx, longctx_isa_active() != isa);
    }
  }
  CHECK(ctx, longctx_isa_set(static_cast<longctx_isa>(7)) == LONGCTX_INVALID_ARGUMENT);
  longctx_isa_reset();
  CHECK(ctx, longctx_isa_active() == before);
  CHECK(ctx, std::strcmp(longctx_status_name(LONGCTX_ISA_REFUSED), "ISA path refused") == 0);
}

}  // namespace longctx::test
