// A tiny check harness for longctx_kernel_tests (no framework dependency): a context that counts
// checks and failures, and CHECK / CHECK_MSG macros that record a failure with file:line and go on.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <string>

namespace longctx::test {

class Ctx {
 public:
  Ctx(std::string path, std::string test) : path_(std::move(path)), test_(std::move(test)) {}

  void Pass() { ++checks_; }

  void Fail(const char* file, int line, const char* expr, const char* fmt = nullptr, ...)
      __attribute__((format(printf, 5, 6))) {
    ++checks_;
    ++failures_;
    if (failures_ > kMaxPrinted) return;
    char msg[512] = "";
    if (fmt != nullptr) {
      va_list ap;
      va_start(ap, fmt);
      std::vsnprintf(msg, sizeof msg, fmt, ap);
      va_end(ap);
    }
    std::fprintf(stderr, "FAIL [%s] %s: %s:%d: %s%s%s\n", path_.c_str(), test_.c_str(), file, line, expr,
                 *msg ? ": " : "", msg);
    if (failures_ == kMaxPrinted) std::fprintf(stderr, "FAIL [%s] %s: further failures not printed\n", path_.c_str(), test_.c_str());
  }

  int64_t checks() const { return checks_; }
  int64_t failures() const { return failures_; }

 private:
  static constexpr int64_t kMaxPrinted = 10;
  std::string path_, test_;
  int64_t checks_ = 0, failures_ = 0;
};

}  // namespace longctx::test

#define CHECK(ctx, cond)                                  \
  do {                                                    \
    if (cond) (ctx).Pass();                               \
    else (ctx).Fail(__FILE__, __LINE__, #cond);           \
  } while (0)

#define CHECK_MSG(ctx, cond, ...)                                  \
  do {                                                             \
    if (cond) (ctx).Pass();                                        \
    else (ctx).Fail(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
  } while (0)
