// Private: turning a checked TensorInfo into a Tensor, shared by the GGUF and safetensors readers.
#pragma once

#include <memory>
#include <string_view>

#include "muninn/core/buffer.h"
#include "muninn/core/tensor.h"
#include "muninn/model/tensor_info.h"

namespace muninn::model::internal {

// A view of `info` (absolute offset into `buffer`, already range-checked by the parser). Copies
// into an aligned host buffer only when the bytes are misaligned for the dtype's natural
// alignment, so kernels never see misaligned f32/f16 data. Unimplemented when info.dtype is
// empty. `source` names the file in errors.
StatusOr<Tensor> MakeTensorView(const std::shared_ptr<Buffer>& buffer, const TensorInfo& info,
                                std::string_view source);

}  // namespace muninn::model::internal
