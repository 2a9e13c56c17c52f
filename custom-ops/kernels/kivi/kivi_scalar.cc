// KIVI, scalar variant (baseline x86-64 flags): the plain loops; the attention step is kivi_attend.h on one lane. Rounding uses cvtss2si (round half to even under
// the default MXCSR), as the packed conversions of the SIMD variants do, so the codes match bit for bit.
#include <xmmintrin.h>

#include "attention/la_vec.h"
#include "kivi/kivi_attend.h"
#include "kivi/kivi_kernels.h"

namespace longctx::kivi {
namespace {

void PackRow(const float* x, const float* zero, const float* inv, int64_t d, int bits, uint8_t* codes) {
  const int per = 8 / bits;
  const float qmax = static_cast<float>((1 << bits) - 1);
  for (int64_t j0 = 0; j0 < d; j0 += per) {
    unsigned byte = 0;
    for (int k = 0; k < per; ++k) {
      float v = (x[j0 + k] - zero[j0 + k]) * inv[j0 + k];
      v = v < 0.0f ? 0.0f : (v > qmax ? qmax : v);
      byte |= static_cast<unsigned>(_mm_cvtss_si32(_mm_set_ss(v))) << (bits * k);
    }
    codes[j0 / per] = static_cast<uint8_t>(byte);
  }
}

void UnpackRow(const uint8_t* codes, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  const int per = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t j = 0; j < d; ++j) {
    const unsigned c = (codes[j / per] >> (bits * (j % per))) & mask;
    y[j] = static_cast<float>(c) * scale[j] + zero[j];
  }
}

void UnpackKeys(const uint8_t* codes, int64_t rows, const float* scale, const float* zero, int64_t d, int bits, float* y) {
  for (int64_t r = 0; r < rows; ++r) UnpackRow(codes + r * d * bits / 8, scale, zero, d, bits, y + r * d);
}

void UnpackValues(const uint8_t* codes, int64_t rows, const float* params, int64_t d, int64_t g, int bits, float* y) {
  const int per = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  const int64_t ng = d / g;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* c = codes + r * d * bits / 8;
    const float* pr = params + r * 2 * ng;
    for (int64_t j = 0; j < d; ++j)
      y[r * d + j] = static_cast<float>((c[j / per] >> (bits * (j % per))) & mask) * pr[j / g] + pr[ng + j / g];
  }
}

struct ScalarTraits : la::ScalarVec {
  static V loadn(const float* p, int64_t) { return *p; }
  static void storen(float* p, V v, int64_t) { *p = v; }
};

}  // namespace

const Table kScalar = {&PackRow, &UnpackRow, &UnpackKeys, &UnpackValues, &Attend<ScalarTraits>::Run};

}  // namespace longctx::kivi
