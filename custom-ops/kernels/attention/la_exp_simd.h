// Vector exp for the SIMD tile loops. AVX-512: Cephes expf (S. Moshier), range reduction x = n ln2 + r with
// ln2 split in two constants, degree-5 polynomial, scaling by 2^n through the exponent bits.
// Relative error ~2 ulp on [-87.3, 88.3]; inputs below -87.3 (masked scores, -inf) give exactly 0.
#pragma once

namespace longctx::la::cephes {
constexpr float kHi = 88.3762626647949f, kLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kC1 = 0.693359375f, kC2 = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace longctx::la::cephes

// Cheaper vector exp (AVX2 path): e^x = 2^t with t = x log2(e) = n + f, n = round(t), |f| <= 1/2;
// 2^f by its Taylor series e^(f ln2) = sum_k (f ln2)^k / k! to degree 6 (truncation <= 0.3466^7 / 7! =
// 1.2e-7 relative), 2^n through the exponent bits. The one rounding of t costs up to |t| 2^-24 relative:
// measured against double exp, 2.3e-7 relative on [-1, 0] (Cephes: 1.2e-7), 1.1e-6 on [-16, 0], and at
// most 1.7e-7 absolute anywhere (Cephes: 6.4e-8): far inside the op's 1e-5 agreement with ORT GQA.
// Against Cephes it drops the two-constant ln2 reduction and the upper clamp (softmax arguments are
// s - max <= 0): 15 vector ops instead of 20. Inputs below kLo (masked scores, -inf, NaN) give 0.
namespace longctx::la::exp2poly {
constexpr float kLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kC1 = 6.93147180559945309e-1f, kC2 = 2.40226506959100712e-1f, kC3 = 5.55041086648215800e-2f;
constexpr float kC4 = 9.61812910762847716e-3f, kC5 = 1.33335581464284434e-3f, kC6 = 1.54035303933816099e-4f;
}  // namespace longctx::la::exp2poly
