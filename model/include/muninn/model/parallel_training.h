// Process groups for data-parallel training (`mpirun -np N muninn train`, issue 12): the
// GradientReducer implementations that cross processes. The trainer never includes mpi.h or
// nccl.h; these factories are defined in model/src/train/parallel/ when the build has MPI
// (CMake MUNINN_MPI, default ON when MPI is found) and NCCL (MUNINN_CUDA with nccl.h and
// libnccl found). In a build without them they return FailedPrecondition saying so.
#pragma once

#include <memory>

#include "muninn/core/status.h"
#include "muninn/model/gradient_reducer.h"

namespace muninn::model {

// Whether this build can run under mpirun / with NCCL.
bool BuiltWithMpi();
bool BuiltWithNccl();

// True when the environment says this process was started by an MPI launcher with more than
// one process (OpenMPI's OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX/Slurm's sizes), so a build
// without MPI can refuse instead of running N copies that overwrite each other's files.
bool LaunchedAsSeveralMpiProcesses();

// This process's rank among the processes on its node, from the launcher's environment
// (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID), else `global_rank`: what picks a
// process's GPU (the NCCL reducer's, and `muninn train --device cuda`'s model).
int NodeLocalRank(int global_rank);

// Initialises MPI (MPI_Init unless already initialised; finalised by the reducer's destructor
// when it initialised it) and returns a reducer over MPI_COMM_WORLD: SumStreams gathers every
// rank's stream gradients with MPI_Allgather and sums them with OrderedStreamSum on each rank.
// MPI errors come back as Status (MPI_ERRORS_RETURN). One per process.
StatusOr<std::unique_ptr<GradientReducer>> CreateMpiGradientReducer();

// For CUDA builds: the same reduction through NCCL (ncclAllGather of the stream gradients on
// the GPU of this rank's node-local index, then OrderedStreamSum on the host, so the bits equal
// the MPI and the local reducers'); MPI starts the processes and broadcasts the NCCL unique id.
// Compiled in CUDA builds; has not run on a GPU yet (docs/TRAINING.md).
StatusOr<std::unique_ptr<GradientReducer>> CreateNcclGradientReducer();

}  // namespace muninn::model
