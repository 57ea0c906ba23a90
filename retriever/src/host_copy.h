// Private to retriever/: reading forward results on the host whatever the backend.
#pragma once

#include "muninn/core/backend.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn::retriever {

// A packed host copy of `t`: Tensor::Contiguous for a host tensor, Backend::Transfer from a device
// tensor of `backend` (e.g. an Intermediate seen by a forward observer on a GPU).
inline StatusOr<Tensor> HostCopy(Backend* backend, const Tensor& t) {
  if (t.device().is_cpu()) return t.Contiguous();
  ASSIGN_OR_RETURN(Tensor host, Tensor::Empty(t.dtype(), t.shape()));
  RETURN_IF_ERROR(backend->Transfer(t, &host));
  return host;
}

}  // namespace muninn::retriever
