// longctx_kernel_tests: every kernel against its reference, on every ISA path this CPU supports.
//
//   longctx_kernel_tests               run the ISA-independent tests, then the kernel tests once per path
//                                      (scalar, avx2, avx512), switching with longctx_isa_set; paths the
//                                      CPU lacks are reported as skipped
//   LONGCTX_ISA=avx2 longctx_kernel_tests   only that path, chosen by the library's load-time override
//   longctx_kernel_tests --list-isas   one line per path: "<isa> supported" | "<isa> unsupported: lacks ..."
//
// Prints one summary line; exit 0 when every check passed, 1 on a failure, 3 when LONGCTX_ISA was refused.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "longctx/cpu.h"
#include "tests.h"

namespace {

using longctx::test::Ctx;
using TestFn = void (*)(Ctx&);

struct Test {
  const char* name;
  TestFn fn;
};

constexpr Test kOnce[] = {
    {"cpu", &longctx::test::CpuFeatureTests},
    {"attention_reference", &longctx::test::AttentionReferenceTests},
};

constexpr Test kPerIsa[] = {
    {"kvquant", &longctx::test::KvQuantTests},
    {"kivi", &longctx::test::KiviTests},
    {"long_attention", &longctx::test::LongAttentionTests},
    {"sparse_attention", &longctx::test::SparseAttentionTests},
};

struct Totals {
  int64_t checks = 0, failures = 0, tests = 0;
};

void Run(const Test& t, const char* path, Totals& totals) {
  Ctx ctx(path, t.name);
  t.fn(ctx);
  totals.checks += ctx.checks();
  totals.failures += ctx.failures();
  totals.tests += 1;
  std::fprintf(stderr, "%s [%s] %s: %lld checks\n", ctx.failures() ? "FAILED" : "ok", path, t.name,
               static_cast<long long>(ctx.checks()));
}

int ListIsas() {
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    auto isa = static_cast<longctx_isa>(i);
    char missing[128];
    if (longctx_isa_supported(isa, missing, sizeof missing)) {
      std::printf("%s supported\n", longctx_isa_name(isa));
    } else {
      std::printf("%s unsupported: lacks %s\n", longctx_isa_name(isa), missing);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--list-isas") == 0) return ListIsas();
  if (argc > 1) {
    std::fprintf(stderr, "usage: longctx_kernel_tests [--list-isas]   (LONGCTX_ISA=scalar|avx2|avx512 selects one path)\n");
    return 2;
  }
  if (const char* err = longctx_isa_choice_error()) {
    std::printf("longctx_kernel_tests: refused: %s\n", err);
    return 3;
  }

  const char* env = std::getenv("LONGCTX_ISA");
  const bool forced = env != nullptr && *env != '\0';
  Totals totals;
  std::string run, skipped;

  for (const Test& t : kOnce) Run(t, "any", totals);
  // Restored after the loop: a forced path was chosen by the library itself at load, not by the setter.
  const longctx_isa loaded = longctx_isa_active();
  for (int i = 0; i < LONGCTX_ISA_COUNT; ++i) {
    const auto isa = static_cast<longctx_isa>(i);
    if (forced && isa != loaded) continue;
    char missing[128];
    if (!longctx_isa_supported(isa, missing, sizeof missing)) {
      skipped += std::string(skipped.empty() ? "" : "; ") + longctx_isa_name(isa) + " (CPU lacks " + missing + ")";
      continue;
    }
    if (!forced && longctx_isa_set(isa) != LONGCTX_OK) {
      std::fprintf(stderr, "FAIL [%s] longctx_isa_set refused a supported path\n", longctx_isa_name(isa));
      totals.failures += 1;
      continue;
    }
    for (const Test& t : kPerIsa) Run(t, longctx_isa_name(isa), totals);
    run += std::string(run.empty() ? "" : " ") + longctx_isa_name(isa);
  }
  longctx_isa_reset();

  std::printf("longctx_kernel_tests: %s: %lld checks in %lld test runs, %lld failed; ISA paths run: %s%s; skipped: %s\n",
              totals.failures ? "FAIL" : "PASS", static_cast<long long>(totals.checks),
              static_cast<long long>(totals.tests), static_cast<long long>(totals.failures),
              run.empty() ? "none" : run.c_str(), forced ? " (forced by LONGCTX_ISA)" : "",
              skipped.empty() ? "none" : skipped.c_str());
  return totals.failures ? 1 : 0;
}
