// The parts of parallel_training.h that do not need MPI, and the answers of a build without it.
#include "muninn/model/parallel_training.h"

#include <cstdlib>
#include <string>

namespace muninn::model {

bool LaunchedAsSeveralMpiProcesses() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && std::atoi(v) > 1) return true;
  }
  return false;
}

int NodeLocalRank(int global_rank) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return global_rank;
}

#ifndef MUNINN_HAS_MPI
bool BuiltWithMpi() { return false; }
StatusOr<std::unique_ptr<GradientReducer>> CreateMpiGradientReducer() {
  return FailedPreconditionError(
      "this muninn was built without MPI; install an MPI (Debian: libopenmpi-dev openmpi-bin) "
      "and reconfigure with -DMUNINN_MPI=ON");
}
#endif

#ifndef MUNINN_HAS_NCCL
bool BuiltWithNccl() { return false; }
StatusOr<std::unique_ptr<GradientReducer>> CreateNcclGradientReducer() {
  return FailedPreconditionError(
      "this muninn was built without NCCL (it needs -DMUNINN_CUDA=ON, MPI, and nccl.h + libnccl "
      "from the CUDA toolkit or the system); use --reducer mpi");
}
#endif

}  // namespace muninn::model
