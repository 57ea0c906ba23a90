// Private to the CUDA backend: what every op needs (device, stream, cuBLAS handle, allocator,
// pinned staging), the RAII owners of the CUDA handles, and the ops' entry points (one family per
// ops_*.cc file, mirroring core/src/cpu/cpu_ops.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string_view>

#include "cuda/decoded_weights.h"
#include "cuda/device_allocator.h"
#include "muninn/core/backend.h"

namespace muninn::cuda {

struct StreamDeleter {
  void operator()(CUstream_st* s) const { (void)cudaStreamDestroy(s); }
};
struct CublasDeleter {
  void operator()(cublasContext* h) const { (void)cublasDestroy(h); }
};
struct EventDeleter {
  void operator()(CUevent_st* e) const { (void)cudaEventDestroy(e); }
};
struct PinnedDeleter {
  void operator()(void* p) const { (void)cudaFreeHost(p); }
};
using StreamPtr = std::unique_ptr<CUstream_st, StreamDeleter>;
using CublasPtr = std::unique_ptr<cublasContext, CublasDeleter>;
using EventPtr = std::unique_ptr<CUevent_st, EventDeleter>;
using PinnedPtr = std::unique_ptr<void, PinnedDeleter>;

// Host <-> device copies through pinned memory, two halves used in turn so that filling one
// overlaps the copy out of the other. Upload returns once the host bytes were consumed (the
// caller may reuse them); Download returns once the bytes arrived.
//
// Small uploads (index tensors: RoPE positions, token ids; at most kSlotBytes) go through a ring of
// kSlots pinned slots instead, each with its own event, so that the host can queue many ops that
// take host indices before it has to wait for the GPU (with the two halves alone, every such op
// waited for the previous one's copy, and the host could not run ahead of the device).
class Staging {
 public:
  static constexpr int kSlots = 64;
  static constexpr size_t kSlotBytes = 16 * 1024;

  Staging(PinnedPtr memory, size_t half_bytes, EventPtr e0, EventPtr e1)
      : memory_(std::move(memory)), half_(half_bytes), events_{std::move(e0), std::move(e1)} {}
  // Allocates the ring of small-upload slots (pinned memory and one event per slot).
  Status InitSlots();
  Status Upload(const void* host, size_t bytes, void* device, cudaStream_t stream);
  Status Download(const void* device, size_t bytes, void* host, cudaStream_t stream);

 private:
  char* Half(int i) const { return static_cast<char*>(memory_.get()) + i * half_; }
  PinnedPtr memory_;
  size_t half_;
  EventPtr events_[2];
  PinnedPtr slots_;
  EventPtr slot_events_[kSlots];
  int next_slot_ = 0;
};

struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  DeviceAllocator* allocator = nullptr;
  Staging* staging = nullptr;
  int sm_count = 1;  // multiprocessors of the device (for grid sizing)
  bool tensor_core_attention = true;  // CudaBackendOptions::tensor_core_attention
  bool coalesced_matvec = true;       // CudaBackendOptions::coalesced_matvec
  DecodedWeightCache* decoded = nullptr;  // prefill's decoded weights (null: decode per call)

  // A contiguous tensor on this device.
  StatusOr<Tensor> Empty(DType dtype, const Shape& shape) const;
};

Status CopyOp(const CudaContext& ctx, const Tensor& src, Tensor* dst);
Status MatMulOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, Tensor* out);
// outs[i] = x · ws[i]ᵀ in one launch at decode (same dtype, M <= kMatVecMaxRows); the caller has
// run CheckMatMulSharedArgs.
Status MatMulSharedOp(const CudaContext& ctx, const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs);
// The fused decode ops (Backend::MatMulAdd, RmsNormMatMulShared — whose caller has run
// CheckMatMulSharedArgs — and SwiGluMatMulAdd): one mat×vec launch for M <= kMatVecMaxRows.
Status MatMulAddOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, Tensor* out);
Status RmsNormMatMulSharedOp(const CudaContext& ctx, const Tensor& x, const Tensor& norm_weight,
                             float eps, std::span<const Tensor* const> ws,
                             std::span<Tensor* const> outs);
Status SwiGluMatMulAddOp(const CudaContext& ctx, const Tensor& gate, const Tensor& up,
                         const Tensor& w, Tensor* out);
Status GetRowsOp(const CudaContext& ctx, const Tensor& table, const Tensor& ids, Tensor* out);
Status RmsNormOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, float eps, Tensor* out);
Status LayerNormOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                   float eps, Tensor* out);
// negate_positions: rotate by the negated positions (RoPE's backward, train_ops.h), exact for
// every int32 position.
Status RopeOp(const CudaContext& ctx, const Tensor& x, const Tensor& pos, const RopeParams& p,
              Tensor* out, bool negate_positions = false);
// Backend::RopeAndStoreKv: one launch for the model's decode step (f16/f32 cache, positions on
// the device), the four plain ops otherwise.
Status RopeAndStoreKvOp(const CudaContext& ctx, const Tensor& positions, const RopeParams& p,
                        Tensor* q, Tensor* k, const Tensor& v, Tensor* k_cache, Tensor* v_cache);
Status SoftmaxOp(const CudaContext& ctx, const Tensor& x, float scale, Tensor* out);
Status SiluOp(const CudaContext& ctx, const Tensor& x, Tensor* out);
Status GeluOp(const CudaContext& ctx, const Tensor& x, GeluMode mode, Tensor* out);
Status SwiGluOp(const CudaContext& ctx, const Tensor& gate, const Tensor& up, Tensor* out);
Status AddOp(const CudaContext& ctx, const Tensor& a, const Tensor& b, Tensor* out);
Status MulOp(const CudaContext& ctx, const Tensor& a, const Tensor& b, Tensor* out);
Status ScaleOp(const CudaContext& ctx, const Tensor& x, float s, Tensor* out);
Status AttentionOp(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& mem_k, const Tensor& mem_v, const AttentionParams& p,
                   Tensor* out);

}  // namespace muninn::cuda

namespace muninn::cuda {

// An index tensor (GetRows ids, Rope positions: i32 or i64 [n]) on ctx's device: `t` itself when
// it already lives there, else a device copy of the host tensor (uploaded through the staging).
StatusOr<Tensor> IndexOnDevice(const CudaContext& ctx, const Tensor& t, std::string_view op,
                               std::string_view name);

}  // namespace muninn::cuda
