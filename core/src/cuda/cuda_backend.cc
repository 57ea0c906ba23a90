// The CUDA backend: device selection, handles, memory and transfers; the ops live in ops_*.cc.
#include "muninn/core/cuda_backend.h"

#include <cstring>
#include <string>

#include "cuda/block_decode.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_status.h"
#include "cuda/cuda_train_ops.h"
#include "cuda/decoded_weights.h"
#include "cuda/kernels.h"

namespace muninn {

Status CudaBackendOptions::Validate() const {
  if (device < 0) {
    return InvalidArgumentError("CUDA device ordinal must be >= 0, got " + std::to_string(device));
  }
  if (staging_bytes < 2 * 4096) {
    return InvalidArgumentError("CUDA staging buffer must be at least 8 KiB, got " +
                                std::to_string(staging_bytes) + " bytes");
  }
  return Status::Ok();
}

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

namespace cuda {
namespace {

bool CudaSupportsOp(const OpDesc& op) {
  switch (op.kind) {
    case OpKind::kMatMul:
    case OpKind::kGetRows:
      return CudaDecodes(op.dtype);
    case OpKind::kCopy:  // the destination's dtype: f32/f16/bf16, and q8_0 (from f32)
      return op.dtype == DType::kF32 || op.dtype == DType::kF16 || op.dtype == DType::kBF16 ||
             op.dtype == DType::kQ8_0;
    case OpKind::kAttention:  // the K/V dtype (q8_0: a quantized KV cache)
      return op.dtype == DType::kF32 || op.dtype == DType::kF16 || op.dtype == DType::kQ8_0;
    case OpKind::kRmsNorm:
    case OpKind::kLayerNorm:
    case OpKind::kRope:
    case OpKind::kSoftmax:
    case OpKind::kSilu:
    case OpKind::kGelu:
    case OpKind::kSwiGlu:
    case OpKind::kAdd:
    case OpKind::kMul:
    case OpKind::kScale:
      return op.dtype == DType::kF32;
  }
  return false;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::shared_ptr<DeviceAllocator> allocator, StreamPtr stream,
              CublasPtr cublas, std::unique_ptr<Staging> staging)
      : allocator_(std::move(allocator)),
        stream_(std::move(stream)),
        cublas_(std::move(cublas)),
        staging_(std::move(staging)) {
    ctx_.device = device;
    ctx_.stream = stream_.get();
    ctx_.cublas = cublas_.get();
    ctx_.allocator = allocator_.get();
    ctx_.staging = staging_.get();
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess &&
        sms > 0) {
      ctx_.sm_count = sms;
    }
  }
  void SetTensorCoreAttention(bool on) { ctx_.tensor_core_attention = on; }
  void SetFusedDecodeOps(bool on) { fused_decode_ops_ = on; }
  void SetCoalescedMatVec(bool on) { ctx_.coalesced_matvec = on; }
  void SetDecodedWeightBudget(size_t bytes) {
    decoded_ = bytes > 0 ? std::make_unique<DecodedWeightCache>(bytes) : nullptr;
    ctx_.decoded = decoded_.get();
  }
  ~CudaBackend() override {
    // Queued kernels may still use buffers and the staging memory: let them finish first.
    (void)cudaSetDevice(ctx_.device);
    (void)cudaStreamSynchronize(ctx_.stream);
  }

  std::string name() const override { return "cuda:" + std::to_string(ctx_.device); }
  Device device() const override { return Device::Cuda(ctx_.device); }

  StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    RETURN_IF_ERROR(Activate());
    return ctx_.Empty(dtype, shape);
  }

  Status Transfer(const Tensor& src, Tensor* dst) override {
    RETURN_IF_ERROR(CheckTransferArgs(*this, src, dst));
    const Device here = device();
    const bool src_here = src.device() == here, dst_here = dst->device() == here;
    RETURN_IF_ERROR(Activate());
    if (src_here && dst_here) return cuda::CopyOp(ctx_, src, dst);
    if (src.numel() == 0) return Status::Ok();
    if (dst_here) {  // host -> device
      Tensor host = src;
      if (!src.is_contiguous()) {
        ASSIGN_OR_RETURN(host, src.Contiguous());
      }
      if (dst->is_contiguous()) {
        return staging_->Upload(host.data(), host.nbytes(), dst->data(), ctx_.stream);
      }
      ASSIGN_OR_RETURN(Tensor tmp, ctx_.Empty(src.dtype(), src.shape()));
      RETURN_IF_ERROR(staging_->Upload(host.data(), host.nbytes(), tmp.data(), ctx_.stream));
      return cuda::CopyOp(ctx_, tmp, dst);
    }
    // device -> host
    if (!dst->is_contiguous()) {
      return InvalidArgumentError("Transfer to the host needs a contiguous destination, got " +
                                  dst->DebugString());
    }
    Tensor dev = src;
    if (!src.is_contiguous()) {
      ASSIGN_OR_RETURN(dev, ctx_.Empty(src.dtype(), src.shape()));
      RETURN_IF_ERROR(cuda::CopyOp(ctx_, src, &dev));
    }
    return staging_->Download(dev.data(), dev.nbytes(), dst->data(), ctx_.stream);
  }

  bool SupportsOp(const OpDesc& op) const override { return CudaSupportsOp(op); }

  Status Synchronize() override {
    RETURN_IF_ERROR(Activate());
    return CudaStatus(cudaStreamSynchronize(ctx_.stream), "cudaStreamSynchronize");
  }

  Status Copy(const Tensor& src, Tensor* dst) override {
    RETURN_IF_ERROR(Activate());
    return CopyOp(ctx_, src, dst);
  }
  Status MatMul(const Tensor& x, const Tensor& w, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return MatMulOp(ctx_, x, w, out);
  }
  Status MatMulShared(const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs) override {
    RETURN_IF_ERROR(Activate());
    RETURN_IF_ERROR(CheckMatMulSharedArgs(*this, x, ws, outs));
    return MatMulSharedOp(ctx_, x, ws, outs);
  }
  // Larger steps would run the fused forms' plain fallbacks through temporaries.
  bool FusesDecodeOps(int64_t n_tokens) const override {
    return fused_decode_ops_ && n_tokens <= kMatVecMaxRows;
  }
  Status RopeAndStoreKv(const Tensor& positions, const RopeParams& p, Tensor* q, Tensor* k,
                        const Tensor& v, Tensor* k_cache, Tensor* v_cache) override {
    RETURN_IF_ERROR(Activate());
    return RopeAndStoreKvOp(ctx_, positions, p, q, k, v, k_cache, v_cache);
  }
  Status MatMulAdd(const Tensor& x, const Tensor& w, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return MatMulAddOp(ctx_, x, w, out);
  }
  Status RmsNormMatMulShared(const Tensor& x, const Tensor& norm_weight, float eps,
                             std::span<const Tensor* const> ws,
                             std::span<Tensor* const> outs) override {
    RETURN_IF_ERROR(Activate());
    RETURN_IF_ERROR(CheckMatMulSharedArgs(*this, x, ws, outs));
    return RmsNormMatMulSharedOp(ctx_, x, norm_weight, eps, ws, outs);
  }
  Status SwiGluMatMulAdd(const Tensor& gate, const Tensor& up, const Tensor& w,
                         Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return SwiGluMatMulAddOp(ctx_, gate, up, w, out);
  }
  Status GetRows(const Tensor& t, const Tensor& ids, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return GetRowsOp(ctx_, t, ids, out);
  }
  Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return RmsNormOp(ctx_, x, w, eps, out);
  }
  Status LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                   Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return LayerNormOp(ctx_, x, w, b, eps, out);
  }
  Status Rope(const Tensor& x, const Tensor& pos, const RopeParams& p, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return RopeOp(ctx_, x, pos, p, out);
  }
  Status Softmax(const Tensor& x, float scale, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return SoftmaxOp(ctx_, x, scale, out);
  }
  Status Silu(const Tensor& x, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return SiluOp(ctx_, x, out);
  }
  Status Gelu(const Tensor& x, GeluMode m, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return GeluOp(ctx_, x, m, out);
  }
  Status SwiGlu(const Tensor& g, const Tensor& u, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return SwiGluOp(ctx_, g, u, out);
  }
  Status Add(const Tensor& a, const Tensor& b, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return AddOp(ctx_, a, b, out);
  }
  Status Mul(const Tensor& a, const Tensor& b, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return MulOp(ctx_, a, b, out);
  }
  Status Scale(const Tensor& x, float s, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return ScaleOp(ctx_, x, s, out);
  }
  Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mk,
                   const Tensor& mv, const AttentionParams& p, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return AttentionOp(ctx_, q, k, v, mk, mv, p, out);
  }
  // The training ops on this backend's stream and allocator (train_ops.h); `pool` is unused.
  StatusOr<std::unique_ptr<TrainOps>> CreateTrainOps(ThreadPool* /*pool*/) override {
    RETURN_IF_ERROR(Activate());
    return MakeCudaTrainOps(&ctx_);
  }

 private:
  // Makes this backend's device current for the calling thread (the runtime's current device is
  // per thread, and another backend may have changed it).
  Status Activate() const { return CudaStatus(cudaSetDevice(ctx_.device), "cudaSetDevice"); }

  // Destroyed in reverse order: staging, cuBLAS handle, stream, then the allocator reference.
  std::shared_ptr<DeviceAllocator> allocator_;
  StreamPtr stream_;
  CublasPtr cublas_;
  std::unique_ptr<Staging> staging_;
  std::unique_ptr<DecodedWeightCache> decoded_;  // its tensors go back to the allocator first
  CudaContext ctx_;
  bool fused_decode_ops_ = true;
};

}  // namespace
}  // namespace cuda

StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return UnavailableError(
        std::string("no CUDA device: ") +
        (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")"
                            : std::string("the driver reports 0 devices")) +
        "; run on a machine with an NVIDIA GPU and driver, or use the CPU backend");
  }
  if (options.device >= count) {
    return InvalidArgumentError("CUDA device " + std::to_string(options.device) +
                                " does not exist; this machine has " + std::to_string(count));
  }
  MUNINN_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  cudaStream_t stream = nullptr;
  MUNINN_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cuda::StreamPtr stream_owner(stream);
  cublasHandle_t handle = nullptr;
  MUNINN_CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle));
  cuda::CublasPtr cublas_owner(handle);
  MUNINN_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  // Sgemm stays full f32: no TF32 (the conformance bounds assume f32 products).
  MUNINN_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  const size_t half = options.staging_bytes / 2;
  void* pinned = nullptr;
  MUNINN_CUDA_RETURN_IF_ERROR(cudaMallocHost(&pinned, 2 * half));
  cuda::PinnedPtr pinned_owner(pinned);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  MUNINN_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e0, cudaEventDisableTiming));
  cuda::EventPtr e0_owner(e0);
  MUNINN_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e1, cudaEventDisableTiming));
  cuda::EventPtr e1_owner(e1);
  auto staging = std::make_unique<cuda::Staging>(std::move(pinned_owner), half, std::move(e0_owner),
                                                 std::move(e1_owner));
  RETURN_IF_ERROR(staging->InitSlots());
  auto allocator = std::make_shared<cuda::DeviceAllocator>(options.device);
  auto backend = std::make_unique<cuda::CudaBackend>(options.device, std::move(allocator),
                                                     std::move(stream_owner),
                                                     std::move(cublas_owner), std::move(staging));
  backend->SetTensorCoreAttention(options.tensor_core_attention);
  backend->SetFusedDecodeOps(options.fused_decode_ops);
  backend->SetCoalescedMatVec(options.coalesced_matvec);
  backend->SetDecodedWeightBudget(options.decoded_weight_cache_bytes);
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace muninn
