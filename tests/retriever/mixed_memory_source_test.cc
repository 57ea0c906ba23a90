// The mixed training memory: the interleaving plan keeps each source's blocks in order, blocks are
// routed to their source with their own index, held-out blocks go to the first source, and a
// resume hands each source its own stream positions.
#include "muninn/retriever/mixed_memory_source.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace muninn::retriever {
namespace {

class LogSource final : public model::TrainMemorySource {
 public:
  explicit LogSource(std::string name) : name_(std::move(name)) {}
  StatusOr<const model::MemoryKV*> Before(model::TrainUse use, int32_t stream, int64_t block,
                                          int64_t step) override {
    log.push_back(name_ + (use == model::TrainUse::kEval ? "E" : "B") + std::to_string(stream) +
                  ":" + std::to_string(block) + "@" + std::to_string(step));
    return &mem_;
  }
  Status After(model::TrainUse, int32_t, int64_t block) override {
    log.push_back(name_ + "a" + std::to_string(block));
    return Status::Ok();
  }
  Status Restore(std::span<const model::TrainStreamPosition> streams, int64_t) override {
    std::string r = name_ + "R";
    for (const auto& p : streams) {
      r += std::to_string(p.stream) + ":" + std::to_string(p.first_block) + "-" +
           std::to_string(p.next_block) + ",";
    }
    log.push_back(r);
    return Status::Ok();
  }
  std::string Describe() const override { return name_; }
  std::vector<std::string> log;

 private:
  std::string name_;
  model::MemoryKV mem_;
};

TEST(MixedMemoryTest, PlanInterleavesAndKeepsOrder) {
  auto p = InterleavePlan(5, 2, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  // The second source starts again from its first block when it runs out.
  EXPECT_EQ(p->source, (std::vector<uint8_t>{0, 0, 1, 0, 0, 1, 0, 1}));
  EXPECT_EQ(p->index, (std::vector<int64_t>{0, 1, 0, 2, 3, 1, 4, 0}));
  EXPECT_EQ(InterleavePlan(3, 2, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(InterleavePlan(0, 2, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(MixedMemoryTest, RoutesBlocksAndRestoresEachSourcesStreams) {
  LogSource a("a"), b("b");
  auto mix = MixedMemorySource::Create(&a, &b, *InterleavePlan(5, 2, 2));
  ASSERT_TRUE(mix.ok()) << mix.status();
  for (int64_t i : {0, 2, 5, 6}) {
    ASSERT_TRUE((*mix)->Before(model::TrainUse::kTrain, 1, i, 3).ok());
    ASSERT_TRUE((*mix)->After(model::TrainUse::kTrain, 1, i).ok());
  }
  ASSERT_TRUE((*mix)->Before(model::TrainUse::kEval, 0, 1, 4).ok());
  EXPECT_EQ(a.log, (std::vector<std::string>{"aB1:0@3", "aa0", "aB1:4@3", "aa4", "aE0:1@4"}));
  EXPECT_EQ(b.log, (std::vector<std::string>{"bB1:0@3", "ba0", "bB1:1@3", "ba1"}));
  EXPECT_EQ((*mix)->Before(model::TrainUse::kTrain, 0, 8, 0).status().code(), StatusCode::kOutOfRange);
  // Two streams: [0, 4) and [4, 8), at combined blocks 3 and 6.
  a.log.clear();
  b.log.clear();
  const model::TrainStreamPosition at[] = {{0, 0, 3}, {1, 4, 6}};
  ASSERT_TRUE((*mix)->Restore(at, 2).ok());
  EXPECT_EQ(a.log, (std::vector<std::string>{"aR0:0-2,1:3-4,"}));
  // Stream 1's next source-b block (combined 7) is b's block 0 again: nothing to replay.
  EXPECT_EQ(b.log, (std::vector<std::string>{"bR0:0-1,1:1-1,"}));
  EXPECT_NE((*mix)->Describe().find("\"second_blocks\":3"), std::string::npos);
}

}  // namespace
}  // namespace muninn::retriever
