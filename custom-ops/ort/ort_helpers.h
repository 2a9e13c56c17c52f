// Shared helpers of the thin ORT lite-API op wrappers (one op per file in ort/): attribute reading with
// defaults, optional inputs and outputs, shape checks, and the conversion of kernel status codes
// (longctx/status.h) into ORT errors. Errors are thrown as Ort::Exception inside Compute bodies and turned
// into Ort::Status at the op boundary (OrtStatusFromCurrentException); nothing throws across ORT's C ABI.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "longctx/cpu.h"
#include "longctx/status.h"
#include "onnxruntime_lite_custom_op.h"

namespace longctx::ort {

inline std::string ShapeStr(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

// Throws an ORT_INVALID_ARGUMENT error prefixed with the op name ("longctx.ReferenceAttention: ...").
[[noreturn]] inline void Fail(const char* op, const std::string& msg) {
  throw Ort::Exception(std::string(op) + ": " + msg, ORT_INVALID_ARGUMENT);
}

// Reads an optional float or int64 attribute; returns `fallback` when it is absent.
template <typename T>
T OptionalAttr(const OrtKernelInfo* info, const char* name, T fallback) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, int64_t>, "float or int64_t attributes");
  T v{};
  OrtStatus* st;
  if constexpr (std::is_same_v<T, float>) {
    st = Ort::GetApi().KernelInfoGetAttribute_float(info, name, &v);
  } else {
    st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  }
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return fallback;
  }
  return v;
}

// Reads a required int64 attribute; a missing one is an error naming the op and the attribute.
inline int64_t RequiredIntAttr(const char* op, const OrtKernelInfo* info, const char* name) {
  int64_t v = 0;
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    Fail(op, std::string("required int attribute '") + name + "' is missing");
  }
  return v;
}

// True when input `index` exists and is wired. An optional input given as an empty name ("") arrives as
// a null OrtValue; the lite API's generated compute would crash on it (ORT 1.31), hence this check.
inline bool InputPresent(OrtKernelContext* context, size_t num_inputs, size_t index) {
  if (index >= num_inputs) return false;
  const OrtValue* v = nullptr;
  Ort::ThrowOnError(Ort::GetApi().KernelContext_GetInput(context, index, &v));
  return v != nullptr;
}

// Allocates float output `index`; returns nullptr when the node leaves that optional output unwired.
inline float* AllocateOptionalOutput(OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) {
  OrtValue* value = nullptr;
  Ort::ThrowOnError(Ort::GetApi().KernelContext_GetOutput(context, index, shape.data(), shape.size(), &value));
  if (value == nullptr) return nullptr;
  float* data = nullptr;
  Ort::ThrowOnError(Ort::GetApi().GetTensorMutableData(value, reinterpret_cast<void**>(&data)));
  return data;
}

// Fails unless `actual` == `expected`; `what` names the tensor and `why` explains the expectation.
inline void ExpectShape(const char* op, const char* what, const std::vector<int64_t>& actual,
                        const std::vector<int64_t>& expected, const std::string& why = "") {
  if (actual != expected) {
    Fail(op, std::string(what) + " shape " + ShapeStr(actual) + " does not match expected " + ShapeStr(expected) +
                 (why.empty() ? "" : " (" + why + ")"));
  }
}

// Fails unless `shape` has `rank` dimensions; `layout` documents them ("[B, S, num_heads*head_size]").
inline void ExpectRank(const char* op, const char* what, const std::vector<int64_t>& shape, size_t rank,
                       const char* layout) {
  if (shape.size() != rank) {
    Fail(op, std::string(what) + " must be rank " + std::to_string(rank) + " " + layout + ", got " + ShapeStr(shape));
  }
}

// Throws the ORT error for a kernel status other than LONGCTX_OK; a refused ISA carries its message.
inline void ThrowIfFailed(const char* op, const char* kernel, longctx_status st) {
  if (st == LONGCTX_OK) return;
  std::string msg = std::string(op) + ": kernel " + kernel + " failed: " + longctx_status_name(st);
  if (st == LONGCTX_ISA_REFUSED && longctx_isa_choice_error() != nullptr) msg += std::string(": ") + longctx_isa_choice_error();
  throw Ort::Exception(std::move(msg), st == LONGCTX_INVALID_ARGUMENT ? ORT_INVALID_ARGUMENT : ORT_RUNTIME_EXCEPTION);
}

// Converts the exception being handled into an OrtStatus* for ORT's C ABI (call inside catch (...)).
inline OrtStatusPtr OrtStatusFromCurrentException(const char* op) noexcept {
  try {
    throw;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": " + e.what()).c_str());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": unknown error").c_str());
  }
}

}  // namespace longctx::ort
