// Entry point loaded by SessionOptions.RegisterCustomOpLibrary.
#include <memory>

#include "long_attention_op.h"
#include "reference_attention.h"

#define LONGCTX_EXPORT __attribute__((visibility("default")))

extern "C" LONGCTX_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                  const OrtApiBase* api_base);

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // cannot report without an API table
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;
  Ort::InitApi(api);  // must precede any other Ort:: call (ORT_API_MANUAL_INIT)

  try {
    // Domain and ops live for the whole process: sessions keep raw pointers.
    static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> ref_attn{longctx::CreateReferenceAttentionOp()};
    // LongAttention: one registration per element type (float32, float16), same name.
    struct OpDeleter {
      void operator()(OrtCustomOp* op) const { longctx::DestroyLongAttentionOp(op); }
    };
    static std::unique_ptr<OrtCustomOp, OpDeleter> long_attn_f32{
        longctx::CreateLongAttentionOp(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)};
    static std::unique_ptr<OrtCustomOp, OpDeleter> long_attn_f16{
        longctx::CreateLongAttentionOp(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)};
    static Ort::CustomOpDomain domain = [] {
      Ort::CustomOpDomain d{"longctx"};
      d.Add(ref_attn.get());
      d.Add(long_attn_f32.get());
      d.Add(long_attn_f16.get());
      return d;
    }();

    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(domain);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
