// Entry point loaded by SessionOptions.RegisterCustomOpLibrary: registers every op of the table below
// in the "longctx" domain. Adding an op = one X(Name) line here plus ort/<name>_op.cc defining
// Ort::Custom::OrtLiteCustomOp* longctx::ort::Create<Name>Op().
#include <memory>
#include <vector>

#include "long_attention_op.h"
#include "longctx/cpu.h"
#include "ort_helpers.h"

#define LONGCTX_EXPORT __attribute__((visibility("default")))

// The op table: one line per op.
#define LONGCTX_OPS(X) \
  X(ReferenceAttention) \
  X(KiviAttention)

namespace longctx::ort {

#define LONGCTX_DECLARE_OP(name) Ort::Custom::OrtLiteCustomOp* Create##name##Op();
LONGCTX_OPS(LONGCTX_DECLARE_OP)
#undef LONGCTX_DECLARE_OP

namespace {

using OpFactory = Ort::Custom::OrtLiteCustomOp* (*)();

#define LONGCTX_OP_ENTRY(name) &Create##name##Op,
constexpr OpFactory kOpFactories[] = {LONGCTX_OPS(LONGCTX_OP_ENTRY)};
#undef LONGCTX_OP_ENTRY

// Ops written on Ort::CustomOpBase rather than the lite API (they need type-generic inputs and the
// raw kernel context): one registration per element type under the same name.
struct TypedOpDeleter {
  void operator()(OrtCustomOp* op) const { DestroyLongAttentionOp(op); }
};
constexpr ONNXTensorElementDataType kLongAttentionTypes[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                                             ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16};

// Domain and ops live for the whole process: sessions keep raw pointers.
struct Registry {
  std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>> ops;
  std::vector<std::unique_ptr<OrtCustomOp, TypedOpDeleter>> typed_ops;
  Ort::CustomOpDomain domain{"longctx"};
  Registry() {
    for (OpFactory create : kOpFactories) {
      ops.emplace_back(create());
      domain.Add(ops.back().get());
    }
    for (ONNXTensorElementDataType type : kLongAttentionTypes) {
      typed_ops.emplace_back(CreateLongAttentionOp(type));
      domain.Add(typed_ops.back().get());
    }
  }
};

}  // namespace
}  // namespace longctx::ort

extern "C" LONGCTX_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                  const OrtApiBase* api_base);

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // cannot report without an API table
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;
  Ort::InitApi(api);  // must precede any other Ort:: call (ORT_API_MANUAL_INIT)

  // A refused LONGCTX_ISA fails registration with its message rather than every later kernel call.
  if (const char* isa_error = longctx_isa_choice_error()) {
    return api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string("liblongctx_ops: ") + isa_error).c_str());
  }
  try {
    static longctx::ort::Registry registry;
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(registry.domain);
  } catch (...) {
    return longctx::ort::OrtStatusFromCurrentException("liblongctx_ops");
  }
  return nullptr;
}
