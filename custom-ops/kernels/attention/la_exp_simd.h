// Vector exp for the SIMD tile loops: Cephes expf (S. Moshier), range reduction x = n ln2 + r with
// ln2 split in two constants, degree-5 polynomial, scaling by 2^n through the exponent bits.
// Relative error ~2 ulp on [-87.3, 88.3]; inputs below -87.3 (masked scores, -inf) give exactly 0.
#pragma once

namespace longctx::la::cephes {
constexpr float kHi = 88.3762626647949f, kLo = -87.3f, kLog2e = 1.44269504088896341f;
constexpr float kC1 = 0.693359375f, kC2 = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace longctx::la::cephes
