// GradientReducer through NCCL for CUDA builds (compiled when MUNINN_CUDA, MPI and NCCL are all
// found). MPI starts the processes and carries the NCCL unique id from rank 0 to the others
// (llm.c's set-up); the gradients go host → this rank's GPU → ncclAllGather → host, and are
// summed with OrderedStreamSum on the host, so the bits are those of the MPI and the local
// reducers (a ncclAllReduce would sum in an order that depends on the ring). The trainer's
// gradients live on the host today, so this only moves the gather onto NVLink/PCIe; it becomes
// the natural path once training runs on the GPU. It has not run on a GPU yet.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "muninn/model/parallel_training.h"

namespace muninn::model {
namespace {

Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return InternalError(std::string(what) + ": " + cudaGetErrorString(e));
}

Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return Status::Ok();
  return InternalError(std::string(what) + ": " + ncclGetErrorString(r));
}

// A device allocation that grows; freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  Status Reserve(size_t bytes) {
    if (bytes <= bytes_) return Status::Ok();
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    RETURN_IF_ERROR(CudaStatus(cudaMalloc(&ptr_, bytes), "cudaMalloc"));
    bytes_ = bytes;
    return Status::Ok();
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class NcclGradientReducer final : public GradientReducer {
 public:
  static StatusOr<std::unique_ptr<GradientReducer>> Create() {
    ASSIGN_OR_RETURN(std::unique_ptr<GradientReducer> mpi, CreateMpiGradientReducer());
    std::unique_ptr<NcclGradientReducer> r(new NcclGradientReducer(std::move(mpi)));
    int devices = 0;
    RETURN_IF_ERROR(CudaStatus(cudaGetDeviceCount(&devices), "cudaGetDeviceCount"));
    if (devices < 1) return FailedPreconditionError("--reducer nccl: no CUDA device");
    // One GPU per process on a node: the node-local rank picks it.
    const int local = NodeLocalRank(r->mpi_->rank());
    RETURN_IF_ERROR(CudaStatus(cudaSetDevice(local % devices), "cudaSetDevice"));
    ncclUniqueId id;
    if (r->mpi_->rank() == 0) RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
    if (MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
      return InternalError("MPI_Bcast of the NCCL unique id failed");
    }
    RETURN_IF_ERROR(
        NcclStatus(ncclCommInitRank(&r->comm_, r->mpi_->world_size(), id, r->mpi_->rank()),
                   "ncclCommInitRank"));
    r->has_comm_ = true;
    RETURN_IF_ERROR(CudaStatus(cudaStreamCreate(&r->stream_), "cudaStreamCreate"));
    r->has_stream_ = true;
    return std::unique_ptr<GradientReducer>(std::move(r));
  }
  ~NcclGradientReducer() override {
    if (has_comm_) ncclCommDestroy(comm_);
    if (has_stream_) cudaStreamDestroy(stream_);
  }
  NcclGradientReducer(const NcclGradientReducer&) = delete;
  NcclGradientReducer& operator=(const NcclGradientReducer&) = delete;

  int rank() const override { return mpi_->rank(); }
  int world_size() const override { return mpi_->world_size(); }

  Status SumStreams(std::span<const float> partials, std::span<const double> losses,
                    std::span<float> out, double* loss_total) override {
    if (out.empty() || losses.empty() || partials.size() != losses.size() * out.size()) {
      return InvalidArgumentError(
          "GradientReducer: partials must be [streams, n] with n = out size");
    }
    const size_t world = static_cast<size_t>(world_size());
    const size_t g_bytes = partials.size_bytes(), l_bytes = losses.size_bytes();
    // The losses (doubles) start at a 256-byte boundary after the gradients.
    const size_t send_l = (g_bytes + 255) / 256 * 256, recv_l = (g_bytes * world + 255) / 256 * 256;
    RETURN_IF_ERROR(send_.Reserve(send_l + l_bytes));
    RETURN_IF_ERROR(recv_.Reserve(recv_l + l_bytes * world));
    auto* send = static_cast<char*>(send_.get());
    auto* recv = static_cast<char*>(recv_.get());
    RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(send, partials.data(), g_bytes, cudaMemcpyHostToDevice, stream_),
                   "cudaMemcpyAsync"));
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(send + send_l, losses.data(), l_bytes, cudaMemcpyHostToDevice, stream_),
        "cudaMemcpyAsync"));
    RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), "ncclGroupStart"));
    RETURN_IF_ERROR(
        NcclStatus(ncclAllGather(send, recv, partials.size(), ncclFloat, comm_, stream_),
                   "ncclAllGather (gradients)"));
    RETURN_IF_ERROR(NcclStatus(
        ncclAllGather(send + send_l, recv + recv_l, losses.size(), ncclDouble, comm_, stream_),
        "ncclAllGather (losses)"));
    RETURN_IF_ERROR(NcclStatus(ncclGroupEnd(), "ncclGroupEnd"));
    all_.resize(partials.size() * world);
    all_losses_.resize(losses.size() * world);
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(all_.data(), recv, g_bytes * world, cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync"));
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(all_losses_.data(), recv + recv_l, l_bytes * world,
                                               cudaMemcpyDeviceToHost, stream_),
                               "cudaMemcpyAsync"));
    RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    // ncclAllGather places rank r's buffer at r·count: stream order, as with MPI.
    OrderedStreamSum(all_, all_losses_, out, loss_total);
    return Status::Ok();
  }

  Status CheckSame(uint64_t value, const std::string& what) override {
    return mpi_->CheckSame(value, what);
  }
  void Abort(int code) override { mpi_->Abort(code); }

 private:
  explicit NcclGradientReducer(std::unique_ptr<GradientReducer> mpi) : mpi_(std::move(mpi)) {}
  // Declared first so it is destroyed last: MPI_Finalize after NCCL and CUDA are torn down.
  std::unique_ptr<GradientReducer> mpi_;
  ncclComm_t comm_{};
  bool has_comm_ = false;
  cudaStream_t stream_{};
  bool has_stream_ = false;
  DeviceBuffer send_, recv_;
  std::vector<float> all_;
  std::vector<double> all_losses_;
};

}  // namespace

bool BuiltWithNccl() { return true; }

StatusOr<std::unique_ptr<GradientReducer>> CreateNcclGradientReducer() {
  return NcclGradientReducer::Create();
}

}  // namespace muninn::model
