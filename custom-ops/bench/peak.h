// Per-ISA FMA loops for the compute peak (peak_scalar.cc, peak_avx2.cc, peak_avx512.cc). Each runs
// `iters` iterations over independent accumulators (enough to cover FMA latency x ports) and writes a
// checksum to *sink so nothing is optimised away; returns the flops performed. Timing stays in
// main.cc (baseline flags): the ISA files include nothing but <immintrin.h> and this header.
#pragma once

#include <stdint.h>

namespace longctx::bench {

double FmaLoopScalar(int64_t iters, float a, float b, float* sink);
double FmaLoopAvx2(int64_t iters, float a, float b, float* sink);
double FmaLoopAvx512(int64_t iters, float a, float b, float* sink);

// bench_long_attention.cc: the multi-threaded LongAttention prefill / decode table (--long-attention).
int LongAttentionBench(int argc, char** argv);
// longctx_kernel_bench --kivi (bench_kivi.cc); argv after the flag.
int KiviBench(int argc, char** argv);

}  // namespace longctx::bench
