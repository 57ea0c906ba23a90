#include "muninn/model/memory_kv.h"

#include <climits>
#include <cstdint>
#include <string>

namespace muninn::model {

StatusOr<Tensor> RotateMemoryKeys(Backend* backend, const RopeParams& rope, const Tensor& keys,
                                  int64_t first_position) {
  MUNINN_CHECK(backend != nullptr);
  if (!keys.defined() || keys.ndim() != 3) {
    return InvalidArgumentError("memory keys must be [M, n_head_kv, head_dim], got " +
                                (keys.defined() ? keys.DebugString() : std::string("<none>")));
  }
  const int64_t m = keys.dim(0);
  if (first_position < INT32_MIN || first_position + m > int64_t{INT32_MAX}) {
    return InvalidArgumentError("memory positions " + std::to_string(first_position) + ".." +
                                std::to_string(first_position + m) + " do not fit int32");
  }
  ASSIGN_OR_RETURN(Tensor out, backend->Allocate(DType::kF32, keys.shape()));  // [M, n_head_kv, hd]
  // Host keys (from the bank) on a device backend are moved first, then converted there.
  ASSIGN_OR_RETURN(Tensor moved, ToBackend(*backend, keys));
  RETURN_IF_ERROR(backend->Copy(moved, &out));
  ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty(DType::kI32, Shape{m}));
  for (int64_t i = 0; i < m; ++i) {
    pos.data_as<int32_t>()[i] = static_cast<int32_t>(first_position + i);
  }
  RETURN_IF_ERROR(backend->Rope(out, pos, rope, &out));
  return out;
}

}  // namespace muninn::model
