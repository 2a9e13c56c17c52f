// Internal: how a kernel family picks its per-ISA function table.
//
// A family declares one table struct of function pointers and one instance per ISA file
// (kFooScalar in foo_scalar.cc, kFooAvx2 in foo_avx2.cc, kFooAvx512 in foo_avx512.cc); its dispatch
// file lists them in ISA order and calls Select() once per entry-point call. The ISA itself is chosen
// once (longctx/cpu.h); Select is an atomic load and an index.
#pragma once

#include "longctx/cpu.h"

namespace longctx::dispatch {

template <typename Table>
using ByIsa = const Table* const[LONGCTX_ISA_COUNT];

// The table for the active ISA, or nullptr when the ISA choice was refused (the caller then returns
// LONGCTX_ISA_REFUSED).
template <typename Table>
const Table* Select(const ByIsa<Table>& tables) {
  if (longctx_isa_choice_error() != nullptr) return nullptr;
  return tables[longctx_isa_active()];
}

}  // namespace longctx::dispatch
