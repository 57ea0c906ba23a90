// The CUDA kernels' block decoders (core/src/cuda/block_decode.h) are plain C++ on the host, so
// their reading of the GGUF layouts is checked here against DequantizeRow on machines without a
// GPU: every chunk of random rows of every dtype the CUDA backend decodes, bit for bit (on the
// device the decoders round products and sums separately, as here, so they match there too).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/src/cuda/block_decode.h"
#include "muninn/core/quant.h"
#include "tests/core/quant_test_util.h"

namespace muninn {
namespace {

template <DType DT>
void CheckDecoder(int64_t rows, int64_t n) {
  using Dec = cuda::BlockDecoder<DT>;
  std::mt19937 rng(static_cast<uint32_t>(DT) + 17);
  const Tensor t = testing::RandomMatrix(DT, rows, n, 0, rng);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> want = testing::RowAsFloat(t, r);
    const int64_t idx[1] = {r};
    const auto* row = static_cast<const uint8_t*>(t.row_ptr(idx));
    for (int64_t c = 0; c < n / Dec::kChunk; ++c) {
      float got[Dec::kChunk];
      Dec::Decode(row, c, got);
      for (int j = 0; j < Dec::kChunk; ++j) {
        ASSERT_EQ(got[j], want[static_cast<size_t>(c * Dec::kChunk + j)])  // bit-exact
            << DTypeName(DT) << " row " << r << " element " << c * Dec::kChunk + j;
      }
    }
  }
}

TEST(CudaBlockDecode, MatchesDequantizeRow) {
  CheckDecoder<DType::kF32>(3, 37);
  CheckDecoder<DType::kF16>(3, 37);
  CheckDecoder<DType::kBF16>(3, 37);
  CheckDecoder<DType::kQ4_0>(5, 576);
  CheckDecoder<DType::kQ4_1>(5, 576);
  CheckDecoder<DType::kQ5_0>(5, 576);
  CheckDecoder<DType::kQ5_1>(5, 576);
  CheckDecoder<DType::kQ8_0>(5, 576);
  CheckDecoder<DType::kQ4_K>(5, 1536);
  CheckDecoder<DType::kQ5_K>(5, 1536);
  CheckDecoder<DType::kQ6_K>(5, 1536);
}

// The q8_0 encoder of the quantizing Copy (the KV cache on a GPU) is QuantizeRow's, bit for bit:
// random rows, rows with ties at .5 after scaling, an all-zero block and a single large value.
// The coalesced mat×vec's lane slices (eight lanes a block, lane t on elements 4t .. 4t + 3):
// every lane of every block of random rows reads the values DequantizeRow gives, bit for bit, and
// the lanes' shares of a dot product add up to the dot product with the dequantized row.
template <DType DT>
void CheckLaneSlices(int64_t rows, int64_t n) {
  using Slice = cuda::LaneSlice<DT>;
  std::mt19937 rng(static_cast<uint32_t>(DT) + 29);
  const Tensor t = testing::RandomMatrix(DT, rows, n, 0, rng);
  std::normal_distribution<float> dist;
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> want = testing::RowAsFloat(t, r);
    const int64_t idx[1] = {r};
    const auto* row = static_cast<const uint8_t*>(t.row_ptr(idx));
    double ref = 0.0, got = 0.0, scale = 0.0;
    for (int64_t b = 0; b < n / 32; ++b) {
      for (int lane = 0; lane < 8; ++lane) {
        float d, m, q[4];
        Slice::Load(row + b * Slice::kBytes, lane, &d, &m, q);
        for (int i = 0; i < 4; ++i) {
          const size_t e = static_cast<size_t>(b * 32 + 4 * lane + i);
          ASSERT_EQ(q[i] * d + m, want[e])
              << DTypeName(DT) << " row " << r << " block " << b << " lane " << lane;
          ref += static_cast<double>(want[e]) * x[e];
          scale += std::abs(static_cast<double>(want[e]) * x[e]);
        }
        got += cuda::LaneDot<DT>(row + b * Slice::kBytes, lane, x.data() + b * 32 + 4 * lane);
      }
    }
    EXPECT_NEAR(got, ref, 1e-5 * scale) << DTypeName(DT) << " row " << r;
  }
}

TEST(CudaBlockDecode, LaneSlicesMatchDequantizeRow) {
  CheckLaneSlices<DType::kQ4_0>(4, 576);
  CheckLaneSlices<DType::kQ4_1>(4, 576);
  CheckLaneSlices<DType::kQ8_0>(4, 576);
}

TEST(CudaBlockDecode, Q8_0EncoderMatchesQuantizeRow) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  const int64_t n = 32 * 40;
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = u(rng);
  for (int j = 0; j < 32; ++j) x[static_cast<size_t>(32 + j)] = 0.0f;  // block 1: zeros
  for (int j = 0; j < 32; ++j) x[static_cast<size_t>(64 + j)] = 0.5f * static_cast<float>(j - 16);
  x[64] = 127.0f;  // block 2: d = 1, every other value a tie at .5
  for (int j = 0; j < 32; ++j) x[static_cast<size_t>(96 + j)] = j == 5 ? -1e6f : 1e-3f;
  std::vector<uint8_t> want(static_cast<size_t>(*RowBytes(DType::kQ8_0, n)));
  ASSERT_TRUE(QuantizeRow(DType::kQ8_0, x.data(), want.data(), n).ok());
  std::vector<uint8_t> got(want.size());
  for (int64_t b = 0; b < n / 32; ++b) {
    cuda::EncodeQ8_0Block(x.data() + b * 32, got.data() + b * 34);
  }
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i;
}

TEST(CudaBlockDecode, KnowsExactlyTheKernelDTypes) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0,
                  DType::kQ5_1, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    EXPECT_TRUE(cuda::CudaDecodes(d)) << DTypeName(d);
  }
  for (DType d : {DType::kQ8_1, DType::kQ8_K, DType::kI32, DType::kF64}) {
    EXPECT_FALSE(cuda::CudaDecodes(d)) << DTypeName(d);
  }
}

}  // namespace
}  // namespace muninn
