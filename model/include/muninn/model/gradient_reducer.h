// GradientReducer: how the trainer combines the gradients of its data streams (issue 12,
// `mpirun -np N muninn train`). The data is cut into S contiguous streams; a step takes
// grad_accum blocks from every stream. Each process owns S / world_size consecutive streams
// (rank r: streams [r·S/N, (r+1)·S/N)) and gives, per owned stream, that stream's gradient
// (its micro-batches accumulated in order, exactly as one process accumulates them) and loss sum.
// The reducer returns, identically on every rank,
//
//   total = ((P_0 + P_1) + P_2) + ... + P_{S-1}     (element-wise f32 adds, stream order)
//
// — a fixed order that depends on S, never on the number of processes, so `-np N` with S
// streams gives the bits of one process running the same S streams (`--streams S`). A plain
// MPI_Allreduce does not promise that order; the MPI and NCCL reducers gather every stream's
// gradient (adapter-sized, cheap) and then sum with OrderedStreamSum on each rank.
//
// Implementations: LocalGradientReducer (one process, world size 1; here), the MPI one
// (model/src/train/parallel/mpi_gradient_reducer.cc, built when MPI is found) and the NCCL one for
// CUDA builds (nccl_gradient_reducer.cc), made by the factories of parallel_training.h. Not
// thread-safe: one call at a time, made by every rank in the same sequence (they are collective).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "muninn/core/status.h"

namespace muninn::model {

// out = partials[0] + partials[1] + ... in that order, partials laid out [n_streams, n] (n =
// out.size()); losses likewise into *loss_total (double). The one definition of the order.
void OrderedStreamSum(std::span<const float> partials, std::span<const double> losses,
                      std::span<float> out, double* loss_total);

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Collective. `partials`: [streams_here, n] this rank's stream gradients in stream order,
  // `losses`: [streams_here]; `out` (n floats) receives the ordered sum over all S =
  // streams_here · world_size streams, *loss_total the ordered sum of the losses. Every rank must
  // pass the same streams_here and n (InvalidArgument / an MPI error otherwise).
  virtual Status SumStreams(std::span<const float> partials, std::span<const double> losses,
                            std::span<float> out, double* loss_total) = 0;

  // Collective: FailedPrecondition naming `what` unless every rank passes the same value (e.g. a
  // hash of the run description, so ranks with other data or settings refuse to start).
  virtual Status CheckSame(uint64_t value, const std::string& what) = 0;

  // Ends every process of the job with `code` (a rank that failed alone would leave the others
  // waiting in a collective). The local reducer does nothing.
  virtual void Abort(int code) = 0;
};

// World size 1: SumStreams is OrderedStreamSum.
class LocalGradientReducer final : public GradientReducer {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Status SumStreams(std::span<const float> partials, std::span<const double> losses,
                    std::span<float> out, double* loss_total) override;
  Status CheckSame(uint64_t, const std::string&) override { return Status::Ok(); }
  void Abort(int) override {}
};

}  // namespace muninn::model
