// GradientReducer over MPI_COMM_WORLD (compiled when CMake's MUNINN_MPI is on).
#include <mpi.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "muninn/model/parallel_training.h"

namespace muninn::model {
namespace {

Status MpiStatus(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return InternalError(std::string(what) +
                       " failed: " + std::string(msg, static_cast<size_t>(len)));
}

class MpiGradientReducer final : public GradientReducer {
 public:
  static StatusOr<std::unique_ptr<GradientReducer>> Create() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    bool owns = false;
    if (!initialized) {
      if (MPI_Init(nullptr, nullptr) != MPI_SUCCESS) {
        return InternalError("MPI_Init failed (is this process started by mpirun?)");
      }
      owns = true;
    }
    std::unique_ptr<MpiGradientReducer> r(new MpiGradientReducer(owns));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    RETURN_IF_ERROR(MpiStatus(MPI_Comm_rank(MPI_COMM_WORLD, &r->rank_), "MPI_Comm_rank"));
    RETURN_IF_ERROR(MpiStatus(MPI_Comm_size(MPI_COMM_WORLD, &r->size_), "MPI_Comm_size"));
    return std::unique_ptr<GradientReducer>(std::move(r));
  }
  ~MpiGradientReducer() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  MpiGradientReducer(const MpiGradientReducer&) = delete;
  MpiGradientReducer& operator=(const MpiGradientReducer&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }

  Status SumStreams(std::span<const float> partials, std::span<const double> losses,
                    std::span<float> out, double* loss_total) override {
    if (out.empty() || losses.empty() || partials.size() != losses.size() * out.size()) {
      return InvalidArgumentError(
          "GradientReducer: partials must be [streams, n] with n = out size");
    }
    if (partials.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
      return InvalidArgumentError("MPI reducer: " + std::to_string(partials.size()) +
                                  " gradient floats per rank exceed MPI's int count");
    }
    const int count = static_cast<int>(partials.size());
    const int n_losses = static_cast<int>(losses.size());
    all_.resize(partials.size() * static_cast<size_t>(size_));
    all_losses_.resize(losses.size() * static_cast<size_t>(size_));
    // Rank r's block lands at offset r·count: the gathered buffer is in stream order.
    RETURN_IF_ERROR(MpiStatus(MPI_Allgather(partials.data(), count, MPI_FLOAT, all_.data(), count,
                                            MPI_FLOAT, MPI_COMM_WORLD),
                              "MPI_Allgather (gradients)"));
    RETURN_IF_ERROR(MpiStatus(MPI_Allgather(losses.data(), n_losses, MPI_DOUBLE, all_losses_.data(),
                                            n_losses, MPI_DOUBLE, MPI_COMM_WORLD),
                              "MPI_Allgather (losses)"));
    OrderedStreamSum(all_, all_losses_, out, loss_total);
    return Status::Ok();
  }

  Status CheckSame(uint64_t value, const std::string& what) override {
    std::vector<uint64_t> all(static_cast<size_t>(size_));
    unsigned long long v = value;
    RETURN_IF_ERROR(MpiStatus(MPI_Allgather(&v, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1,
                                            MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD),
                              "MPI_Allgather (check)"));
    for (int r = 1; r < size_; ++r) {
      if (all[static_cast<size_t>(r)] != all[0]) {
        return FailedPreconditionError("MPI rank " + std::to_string(r) +
                                       " differs from rank 0 in " + what);
      }
    }
    return Status::Ok();
  }

  void Abort(int code) override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  explicit MpiGradientReducer(bool owns) : owns_(owns) {}
  bool owns_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<float> all_;
  std::vector<double> all_losses_;
};

}  // namespace

bool BuiltWithMpi() { return true; }

StatusOr<std::unique_ptr<GradientReducer>> CreateMpiGradientReducer() {
  return MpiGradientReducer::Create();
}

}  // namespace muninn::model
