// The fixed summation order behind `mpirun -np N` = one process with N streams: stream
// gradients are added left to right in stream order, whatever the number of processes.
#include "muninn/model/gradient_reducer.h"
#include "muninn/model/parallel_training.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace muninn::model {
namespace {

// Four streams whose f32 sum depends on the order: 1e8 + 1 rounds back to 1e8 (the spacing of
// floats there is 8), so left to right gives ((1e8 + 1) - 1e8) + 1 = 1, while pairwise
// (1e8 + 1) + (-1e8 + 1) or reverse order give 0.
TEST(GradientReducerTest, SumsStreamsLeftToRightInStreamOrder) {
  const std::vector<float> partials = {1e8f,  2.0f,   // stream 0
                                       1.0f,  3.0f,   // stream 1
                                       -1e8f, 5.0f,   // stream 2
                                       1.0f,  7.0f};  // stream 3
  const std::vector<double> losses = {1e17, 1.0, -1e17, 1.0};
  std::vector<float> out(2, -1.0f);
  double loss = 0.0;
  LocalGradientReducer r;
  ASSERT_TRUE(r.SumStreams(partials, losses, out, &loss).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 17.0f);
  EXPECT_EQ(loss, 1.0);  // ((1e17 + 1) - 1e17) + 1 in double: the 1 is lost too
  // The orders a tree all-reduce might use give other bits.
  const float pairwise = (1e8f + 1.0f) + (-1e8f + 1.0f);
  const float reverse = ((1.0f + -1e8f) + 1.0f) + 1e8f;
  EXPECT_NE(pairwise, out[0]);
  EXPECT_NE(reverse, out[0]);
  EXPECT_EQ(r.rank(), 0);
  EXPECT_EQ(r.world_size(), 1);
}

// The GPU of a data-parallel process follows its rank on its node (what the launcher says), so the
// NCCL reducer and the model of `muninn train --device cuda` pick the same one.
TEST(GradientReducerTest, NodeLocalRankComesFromTheLauncher) {
  const char* vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
  std::string saved[3];
  bool had[3];
  for (int i = 0; i < 3; ++i) {
    const char* v = std::getenv(vars[i]);
    had[i] = v != nullptr;
    if (had[i]) saved[i] = v;
    unsetenv(vars[i]);
  }
  EXPECT_EQ(NodeLocalRank(5), 5);  // no launcher: the global rank
  setenv("SLURM_LOCALID", "2", 1);
  EXPECT_EQ(NodeLocalRank(5), 2);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);  // Open MPI's first
  EXPECT_EQ(NodeLocalRank(5), 1);
  for (int i = 0; i < 3; ++i) {
    if (had[i]) {
      setenv(vars[i], saved[i].c_str(), 1);
    } else {
      unsetenv(vars[i]);
    }
  }
}

TEST(GradientReducerTest, RefusesMisshapenInput) {
  LocalGradientReducer r;
  std::vector<float> out(3);
  double loss = 0.0;
  const std::vector<float> partials(7, 1.0f);
  const std::vector<double> losses(2, 0.0);
  EXPECT_EQ(r.SumStreams(partials, losses, out, &loss).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn::model
