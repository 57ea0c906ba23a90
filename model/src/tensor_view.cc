#include "tensor_view.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "muninn/model/gguf_format.h"

namespace muninn::model::internal {
namespace {

std::string TypeList() {
  std::string s;
  for (uint32_t id = 0; id < 64; ++id) {
    const GgufTypeInfo* t = FindGgufType(id);
    if (t == nullptr || !t->dtype) continue;
    if (!s.empty()) s += ", ";
    s += t->name;
  }
  return s;
}

// Natural alignment of the element or block structure (ggml blocks start with fp16 scales).
size_t RequiredAlignment(DType dtype) {
  const DTypeInfo& info = GetDTypeInfo(dtype);
  return info.quantized ? 2 : info.block_bytes;
}

}  // namespace

StatusOr<Tensor> MakeTensorView(const std::shared_ptr<Buffer>& buffer, const TensorInfo& info,
                                std::string_view source) {
  if (!info.dtype) {
    return UnimplementedError(std::string(source) + ": tensor '" + info.name + "' has type " +
                              info.type_name +
                              ", which muninn cannot compute with; convert or re-quantize the "
                              "model to one of: " + TypeList());
  }
  uint64_t end = 0;
  if (__builtin_add_overflow(info.offset, info.nbytes, &end) || end > buffer->size()) {
    return InternalError(std::string(source) + ": tensor '" + info.name + "' lies past the end");
  }
  const auto* p = static_cast<const uint8_t*>(buffer->data()) + info.offset;
  if (reinterpret_cast<uintptr_t>(p) % RequiredAlignment(*info.dtype) != 0) {
    ASSIGN_OR_RETURN(Tensor copy, Tensor::Empty(*info.dtype, info.shape));
    if (info.nbytes > 0) std::memcpy(copy.data(), p, static_cast<size_t>(info.nbytes));
    return copy;
  }
  StatusOr<Tensor> t =
      Tensor::FromBuffer(buffer, static_cast<size_t>(info.offset), *info.dtype, info.shape);
  if (!t.ok()) return t.status().WithContext(std::string(source) + ": tensor '" + info.name + "'");
  return t;
}

}  // namespace muninn::model::internal
