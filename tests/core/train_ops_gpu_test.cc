// The CUDA backend's TrainOps (train_ops.h) against the CPU backend's, op by op: random inputs
// with fixed seeds, shapes of the default model (SmolLM2-135M: n_embd 576, 9 heads / 3 KV heads,
// head_dim 64, n_ff 1536, vocab 49152) plus odd sizes, the memory block with mem_q and mem_bias,
// LoRA dropout and ignored labels. Errors are normalised max errors (max |gpu - cpu| / max |cpu|)
// with a bound per op; the dropout mask must match bit for bit, and the same CUDA call repeated
// must give the same bits.
//
// Every test is TrainOpsGpu.* (ctest label `gpu`) and skips, saying why, when no CUDA device is
// present or muninn was built without MUNINN_CUDA.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/thread_pool.h"
#include "muninn/core/train_ops.h"
#include "tests/core/cuda_test_util.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn {
namespace {

using muninn::testing::CudaBackendOrNull;

Tensor RandomHost(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::Empty(DType::kF32, shape).value();
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

Tensor CloneHost(const Tensor& t) { return t.Contiguous().value(); }

const float* Floats(const Tensor& t) { return t.data_as<const float>(); }

// max |got - want| / max |want| (absolute when want is all zeros).
double NormMaxErr(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (!(got.shape() == want.shape())) return std::numeric_limits<double>::infinity();
  double err = 0.0, scale = 0.0;
  const float* g = Floats(got);
  const float* w = Floats(want);
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(g[i]) - w[i]);
    if (!(d <= err)) err = d;  // NaN propagates
    scale = std::max(scale, std::fabs(static_cast<double>(w[i])));
  }
  return scale > 0.0 ? err / scale : err;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Both backends' TrainOps; SetUp skips when there is no CUDA device.
class TrainOpsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    gpu_be_ = CudaBackendOrNull(&why);
    if (gpu_be_ == nullptr) GTEST_SKIP() << why;
    auto g = gpu_be_->CreateTrainOps(nullptr);
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = std::move(g).value();
    ASSERT_EQ(gpu_->device(), gpu_be_->device());
    pool_ = std::make_unique<ThreadPool>(0);
    CpuBackendOptions o;
    o.pool = pool_.get();
    cpu_be_ = CreateCpuBackend(o).value();
    auto c = cpu_be_->CreateTrainOps(pool_.get());
    ASSERT_TRUE(c.ok()) << c.status();
    cpu_ = std::move(c).value();
  }

  // A device copy of host tensor t.
  Tensor Up(const Tensor& t) {
    Tensor d = gpu_be_->Allocate(t.dtype(), t.shape()).value();
    const Status st = gpu_be_->Transfer(t, &d);
    EXPECT_TRUE(st.ok()) << st;
    return d;
  }
  // A host copy of device tensor t.
  Tensor Down(const Tensor& t) {
    Tensor h = Tensor::Empty(t.dtype(), t.shape()).value();
    const Status st = gpu_be_->Transfer(t, &h);
    EXPECT_TRUE(st.ok()) << st;
    return h;
  }
  // Expects the device tensor `gpu` within `bound` (normalised max error) of host tensor `cpu`.
  void ExpectClose(const Tensor& gpu, const Tensor& cpu, double bound, const std::string& what) {
    const double err = NormMaxErr(Down(gpu), cpu);
    EXPECT_LE(err, bound) << what;
  }

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> cpu_be_;
  std::unique_ptr<Backend> gpu_be_;
  std::unique_ptr<TrainOps> cpu_;
  std::unique_ptr<TrainOps> gpu_;
};

// ---- matmuls ------------------------------------------------------------------------------------

TEST_F(TrainOpsGpu, Linear) {
  struct Case {
    int64_t m, n_in, n_out;
  };
  uint32_t seed = 100;
  for (const Case c : {Case{37, 576, 1536}, Case{256, 576, 576}, Case{5, 1536, 576},
                       Case{1, 77, 33}, Case{300, 576, 192}}) {
    SCOPED_TRACE(::testing::Message() << "m " << c.m << " n_in " << c.n_in << " n_out " << c.n_out);
    const Tensor x = RandomHost({c.m, c.n_in}, seed++);
    const Tensor w = RandomHost({c.n_out, c.n_in}, seed++, -0.1f, 0.1f);
    Tensor y_c = Tensor::Empty(DType::kF32, {c.m, c.n_out}).value();
    ASSERT_TRUE(cpu_->Linear(x, w, &y_c).ok());
    const Tensor x_g = Up(x), w_g = Up(w);
    Tensor y_g = Up(RandomHost({c.m, c.n_out}, seed++));  // garbage: y is written
    ASSERT_TRUE(gpu_->Linear(x_g, w_g, &y_g).ok());
    ExpectClose(y_g, y_c, 1e-5, "Linear y");

    // LinearBackwardInput, written and accumulated.
    const Tensor dy = RandomHost({c.m, c.n_out}, seed++);
    for (const bool accumulate : {false, true}) {
      const Tensor dx0 = RandomHost({c.m, c.n_in}, seed++);
      Tensor dx_c = CloneHost(dx0);
      ASSERT_TRUE(cpu_->LinearBackwardInput(dy, w, accumulate, &dx_c).ok());
      Tensor dx_g = Up(dx0);
      ASSERT_TRUE(gpu_->LinearBackwardInput(Up(dy), w_g, accumulate, &dx_g).ok());
      ExpectClose(dx_g, dx_c, 1e-5, accumulate ? "dx accumulated" : "dx written");
    }
  }
}

// ---- LoRA ---------------------------------------------------------------------------------------

LoraDims Lora(int64_t m, int64_t n_in, int64_t n_out, int64_t rank, float dropout, uint64_t seed) {
  LoraDims d;
  d.m = m;
  d.n_in = n_in;
  d.n_out = n_out;
  d.rank = rank;
  d.scale = 16.0f / static_cast<float>(rank);
  d.dropout = dropout;
  d.seed = seed;
  return d;
}

TEST_F(TrainOpsGpu, LoraDropoutMaskIsBitIdentical) {
  for (const float p : {0.0f, 0.05f, 0.1f, 0.5f}) {
    SCOPED_TRACE(::testing::Message() << "dropout " << p);
    const LoraDims d =
        Lora(67, 576, 192, 8, p, 0x1234567890abcdefull + static_cast<uint64_t>(p * 100));
    const Tensor x = RandomHost({d.m, d.n_in}, 7, 0.5f, 1.5f);  // never zero: zeros are the mask
    Tensor xd_c = Tensor::Empty(DType::kF32, x.shape()).value();
    ASSERT_TRUE(cpu_->LoraDropout(d, x, &xd_c).ok());
    const Tensor x_g = Up(x);
    Tensor xd_g = gpu_be_->Allocate(DType::kF32, x.shape()).value();
    ASSERT_TRUE(gpu_->LoraDropout(d, x_g, &xd_g).ok());
    const Tensor got = Down(xd_g);
    // The same elements dropped, and the kept ones scaled by the same float product.
    int64_t zeros = 0, mismatched_zeros = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const bool zc = Floats(xd_c)[i] == 0.0f, zg = Floats(got)[i] == 0.0f;
      zeros += zc;
      mismatched_zeros += zc != zg;
    }
    EXPECT_EQ(mismatched_zeros, 0);
    if (p > 0.0f) {
      const double frac = static_cast<double>(zeros) / static_cast<double>(x.numel());
      EXPECT_NEAR(frac, p, 0.02);
    } else {
      EXPECT_EQ(zeros, 0);
    }
    EXPECT_TRUE(SameBits(got, xd_c));

    // In place gives the same bits.
    Tensor inplace = Up(x);
    ASSERT_TRUE(gpu_->LoraDropout(d, inplace, &inplace).ok());
    EXPECT_TRUE(SameBits(Down(inplace), xd_c));
  }
}

TEST_F(TrainOpsGpu, LoraForwardBackward) {
  struct Case {
    int64_t m, n_in, n_out, rank;
    float dropout;
  };
  uint32_t seed = 200;
  for (const Case c : {Case{67, 576, 192, 8, 0.1f}, Case{256, 576, 576, 16, 0.0f},
                       Case{37, 1536, 576, 8, 0.05f}, Case{3, 77, 33, 5, 0.3f}}) {
    SCOPED_TRACE(::testing::Message() << "m " << c.m << " n_in " << c.n_in << " n_out " << c.n_out
                                    << " rank " << c.rank << " dropout " << c.dropout);
    const LoraDims d = Lora(c.m, c.n_in, c.n_out, c.rank, c.dropout, 99 + seed);
    const Tensor x = RandomHost({d.m, d.n_in}, seed++);
    const Tensor a = RandomHost({d.rank, d.n_in}, seed++, -0.1f, 0.1f);
    const Tensor b = RandomHost({d.n_out, d.rank}, seed++, -0.1f, 0.1f);
    const Tensor y0 = RandomHost({d.m, d.n_out}, seed++);
    const Tensor x_g = Up(x), a_g = Up(a), b_g = Up(b);

    // Forward: xd = drop(x), u = xd · aᵀ, y += scale · u · bᵀ.
    Tensor xd_c = Tensor::Empty(DType::kF32, x.shape()).value();
    ASSERT_TRUE(cpu_->LoraDropout(d, x, &xd_c).ok());
    Tensor u_c = Tensor::Empty(DType::kF32, {d.m, d.rank}).value();
    Tensor y_c = CloneHost(y0);
    ASSERT_TRUE(cpu_->LoraForward(d, xd_c, a, b, &u_c, &y_c).ok());
    Tensor xd_g = gpu_be_->Allocate(DType::kF32, x.shape()).value();
    ASSERT_TRUE(gpu_->LoraDropout(d, x_g, &xd_g).ok());
    Tensor u_g = gpu_be_->Allocate(DType::kF32, {d.m, d.rank}).value();
    Tensor y_g = Up(y0);
    ASSERT_TRUE(gpu_->LoraForward(d, xd_g, a_g, b_g, &u_g, &y_g).ok());
    ExpectClose(u_g, u_c, 1e-5, "u");
    ExpectClose(y_g, y_c, 1e-5, "y");

    // Backward: da, db, dx added; each on the CPU's own forward tensors so that only the backward
    // is compared.
    const Tensor dy = RandomHost({d.m, d.n_out}, seed++);
    const Tensor da0 = RandomHost({d.rank, d.n_in}, seed++, -0.01f, 0.01f);
    const Tensor db0 = RandomHost({d.n_out, d.rank}, seed++, -0.01f, 0.01f);
    const Tensor dx0 = RandomHost({d.m, d.n_in}, seed++);
    Tensor da_c = CloneHost(da0), db_c = CloneHost(db0), dx_c = CloneHost(dx0);
    ASSERT_TRUE(cpu_->LoraBackward(d, dy, xd_c, u_c, a, b, &da_c, &db_c, &dx_c).ok());
    const Tensor dy_g = Up(dy), xdc_g = Up(xd_c), uc_g = Up(u_c);
    Tensor da_g = Up(da0), db_g = Up(db0), dx_g = Up(dx0);
    ASSERT_TRUE(gpu_->LoraBackward(d, dy_g, xdc_g, uc_g, a_g, b_g, &da_g, &db_g, &dx_g).ok());
    ExpectClose(da_g, da_c, 1e-5, "da");
    ExpectClose(db_g, db_c, 1e-5, "db");
    ExpectClose(dx_g, dx_c, 1e-5, "dx");
    // The dropped elements of dx got nothing: their bits are the initial ones.
    const Tensor dx_got = Down(dx_g);
    int64_t changed_dropped = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      if (Floats(xd_c)[i] == 0.0f && Floats(x)[i] != 0.0f) {
        changed_dropped += std::memcmp(Floats(dx_got) + i, Floats(dx0) + i, sizeof(float)) != 0;
      }
    }
    EXPECT_EQ(changed_dropped, 0);

    // Optional outputs: dx alone, then da and db alone.
    Tensor dx2_c = CloneHost(dx0), dx2_g = Up(dx0);
    ASSERT_TRUE(cpu_->LoraBackward(d, dy, xd_c, u_c, a, b, nullptr, nullptr, &dx2_c).ok());
    ASSERT_TRUE(gpu_->LoraBackward(d, dy_g, xdc_g, uc_g, a_g, b_g, nullptr, nullptr, &dx2_g).ok());
    ExpectClose(dx2_g, dx2_c, 1e-5, "dx alone");
    Tensor da3_c = CloneHost(da0), db3_c = CloneHost(db0), da3_g = Up(da0), db3_g = Up(db0);
    ASSERT_TRUE(cpu_->LoraBackward(d, dy, xd_c, u_c, a, b, &da3_c, &db3_c, nullptr).ok());
    ASSERT_TRUE(gpu_->LoraBackward(d, dy_g, xdc_g, uc_g, a_g, b_g, &da3_g, &db3_g, nullptr).ok());
    ExpectClose(da3_g, da3_c, 1e-5, "da without dx");
    ExpectClose(db3_g, db3_c, 1e-5, "db without dx");
  }
}

// ---- row-wise ops -------------------------------------------------------------------------------

TEST_F(TrainOpsGpu, RmsNorm) {
  struct Case {
    int64_t rows, d;
  };
  uint32_t seed = 300;
  const float eps = 1e-5f;
  for (const Case c : {Case{37, 576}, Case{300, 77}, Case{1, 576}, Case{129, 1536}}) {
    SCOPED_TRACE(::testing::Message() << "rows " << c.rows << " d " << c.d);
    const Tensor x = RandomHost({c.rows, c.d}, seed++, -2.0f, 2.0f);
    const Tensor w = RandomHost({c.d}, seed++, 0.5f, 1.5f);
    const Tensor x_g = Up(x), w_g = Up(w);

    Tensor y_c = Tensor::Empty(DType::kF32, x.shape()).value();
    ASSERT_TRUE(cpu_->RmsNormForward(x, w, eps, &y_c).ok());
    Tensor y_g = gpu_be_->Allocate(DType::kF32, x.shape()).value();
    ASSERT_TRUE(gpu_->RmsNormForward(x_g, w_g, eps, &y_g).ok());
    ExpectClose(y_g, y_c, 1e-6, "y");

    const Tensor dy = RandomHost(x.shape(), seed++);
    const Tensor dw0 = RandomHost({c.d}, seed++, -0.1f, 0.1f);
    const Tensor dy_g = Up(dy);
    for (const bool with_w : {true, false}) {
      SCOPED_TRACE(with_w ? "with w" : "w = 1");
      const Tensor wc = with_w ? w : Tensor();
      const Tensor wg = with_w ? w_g : Tensor();
      Tensor dx_c = Tensor::Empty(DType::kF32, x.shape()).value();
      Tensor dw_c = CloneHost(dw0);
      ASSERT_TRUE(cpu_->RmsNormBackward(x, wc, dy, eps, &dx_c, &dw_c).ok());
      Tensor dx_g = gpu_be_->Allocate(DType::kF32, x.shape()).value();
      Tensor dw_g = Up(dw0);
      ASSERT_TRUE(gpu_->RmsNormBackward(x_g, wg, dy_g, eps, &dx_g, &dw_g).ok());
      ExpectClose(dx_g, dx_c, 1e-5, "dx");
      ExpectClose(dw_g, dw_c, 1e-5, "dw");
      // dw may be null.
      Tensor dx2_g = gpu_be_->Allocate(DType::kF32, x.shape()).value();
      ASSERT_TRUE(gpu_->RmsNormBackward(x_g, wg, dy_g, eps, &dx2_g, nullptr).ok());
      ExpectClose(dx2_g, dx_c, 1e-5, "dx without dw");
    }
  }
}

TEST_F(TrainOpsGpu, RopeBackward) {
  struct Case {
    int64_t T, n_head, head_dim;
    RopeLayout layout;
    int n_rot;
    RopeScaling scaling;
    float factor;
  };
  uint32_t seed = 400;
  for (const Case c : {Case{37, 9, 64, RopeLayout::kHalves, 0, RopeScaling::kNone, 1.0f},
                       Case{37, 3, 64, RopeLayout::kInterleaved, 0, RopeScaling::kNone, 1.0f},
                       Case{20, 4, 80, RopeLayout::kHalves, 32, RopeScaling::kLinear, 2.0f},
                       Case{33, 2, 128, RopeLayout::kHalves, 0, RopeScaling::kYarn, 4.0f},
                       Case{5, 9, 64, RopeLayout::kInterleaved, 48, RopeScaling::kNtk, 2.0f}}) {
    SCOPED_TRACE(::testing::Message()
                 << "T " << c.T << " heads " << c.n_head << " head_dim " << c.head_dim << " layout "
                 << static_cast<int>(c.layout) << " n_rot " << c.n_rot << " scaling "
                 << static_cast<int>(c.scaling));
    RopeParams p;
    p.layout = c.layout;
    p.n_rot = c.n_rot;
    p.scaling = c.scaling;
    p.factor = c.factor;
    const Tensor dy = RandomHost({c.T, c.n_head, c.head_dim}, seed++);
    Tensor pos = Tensor::Empty(DType::kI32, {c.T}).value();
    std::mt19937 rng(seed++);
    std::uniform_int_distribution<int32_t> upos(-50, 9000);
    for (int64_t t = 0; t < c.T; ++t) pos.data_as<int32_t>()[t] = t == 0 ? 0 : upos(rng);

    Tensor dx_c = Tensor::Empty(DType::kF32, dy.shape()).value();
    ASSERT_TRUE(cpu_->RopeBackward(dy, pos, p, &dx_c).ok());
    const Tensor dy_g = Up(dy), pos_g = Up(pos);
    for (const bool device_pos : {false, true}) {
      SCOPED_TRACE(device_pos ? "device positions" : "host positions");
      Tensor dx_g = gpu_be_->Allocate(DType::kF32, dy.shape()).value();
      ASSERT_TRUE(gpu_->RopeBackward(dy_g, device_pos ? pos_g : pos, p, &dx_g).ok());
      ExpectClose(dx_g, dx_c, 2e-5, "dx");
      // In place.
      Tensor inplace = Up(dy);
      ASSERT_TRUE(gpu_->RopeBackward(inplace, device_pos ? pos_g : pos, p, &inplace).ok());
      EXPECT_TRUE(SameBits(Down(inplace), Down(dx_g)));
    }
    // Without YaRN's magnitude factor the backward inverts the CUDA forward Rope.
    if (c.scaling != RopeScaling::kYarn) {
      Tensor fwd = gpu_be_->Allocate(DType::kF32, dy.shape()).value();
      ASSERT_TRUE(gpu_be_->Rope(dy_g, pos_g, p, &fwd).ok());
      Tensor back = gpu_be_->Allocate(DType::kF32, dy.shape()).value();
      ASSERT_TRUE(gpu_->RopeBackward(fwd, pos_g, p, &back).ok());
      ExpectClose(back, dy, 2e-5, "backward of forward");
    }
  }
  // A host position INT32_MIN cannot be negated: refused, as on the CPU.
  Tensor pos = Tensor::Zeros(DType::kI32, {2}).value();
  pos.data_as<int32_t>()[1] = std::numeric_limits<int32_t>::min();
  Tensor dy_g = Up(RandomHost({2, 1, 8}, 1));
  Tensor dx_g = gpu_be_->Allocate(DType::kF32, dy_g.shape()).value();
  const Status st = gpu_->RopeBackward(dy_g, pos, RopeParams{}, &dx_g);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
}

TEST_F(TrainOpsGpu, SwiGlu) {
  uint32_t seed = 500;
  for (const Shape& shape : {Shape{37, 1536}, Shape{5, 77}, Shape{1}, Shape{256, 1536}}) {
    SCOPED_TRACE(shape.ToString());
    const Tensor gate = RandomHost(shape, seed++, -6.0f, 6.0f);
    const Tensor up = RandomHost(shape, seed++, -2.0f, 2.0f);
    const Tensor dy = RandomHost(shape, seed++);
    const Tensor gate_g = Up(gate), up_g = Up(up), dy_g = Up(dy);
    Tensor out_c = Tensor::Empty(DType::kF32, shape).value();
    ASSERT_TRUE(cpu_->SwiGluForward(gate, up, &out_c).ok());
    Tensor out_g = gpu_be_->Allocate(DType::kF32, shape).value();
    ASSERT_TRUE(gpu_->SwiGluForward(gate_g, up_g, &out_g).ok());
    ExpectClose(out_g, out_c, 1e-6, "out");

    Tensor dgate_c = Tensor::Empty(DType::kF32, shape).value();
    Tensor dup_c = Tensor::Empty(DType::kF32, shape).value();
    ASSERT_TRUE(cpu_->SwiGluBackward(gate, up, dy, &dgate_c, &dup_c).ok());
    Tensor dgate_g = gpu_be_->Allocate(DType::kF32, shape).value();
    Tensor dup_g = gpu_be_->Allocate(DType::kF32, shape).value();
    ASSERT_TRUE(gpu_->SwiGluBackward(gate_g, up_g, dy_g, &dgate_g, &dup_g).ok());
    // σ(g) near 1 loses bits in 1 - σ(g), and exp differs by an ulp or two between libms.
    ExpectClose(dgate_g, dgate_c, 5e-6, "dgate");
    ExpectClose(dup_g, dup_c, 2e-6, "dup");
  }
}

TEST_F(TrainOpsGpu, AddInPlace) {
  const Tensor x = RandomHost({37, 576}, 600), y0 = RandomHost({37, 576}, 601);
  Tensor y_c = CloneHost(y0);
  ASSERT_TRUE(cpu_->AddInPlace(x, &y_c).ok());
  Tensor y_g = Up(y0);
  ASSERT_TRUE(gpu_->AddInPlace(Up(x), &y_g).ok());
  EXPECT_TRUE(SameBits(Down(y_g), y_c));  // one float add per element
  // y += y.
  Tensor self_c = CloneHost(y0);
  ASSERT_TRUE(cpu_->AddInPlace(self_c, &self_c).ok());
  Tensor self_g = Up(y0);
  ASSERT_TRUE(gpu_->AddInPlace(self_g, &self_g).ok());
  EXPECT_TRUE(SameBits(Down(self_g), self_c));
}

TEST_F(TrainOpsGpu, AdamW) {
  AdamWOptions o;
  o.weight_decay = 0.01f;
  for (const int64_t n : {int64_t{4099}, int64_t{576 * 8}, int64_t{1}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const Tensor p0 = RandomHost({n}, 700);
    Tensor p_c = CloneHost(p0), m_c = Tensor::Zeros(DType::kF32, {n}).value(),
           v_c = Tensor::Zeros(DType::kF32, {n}).value();
    Tensor p_g = Up(p0), m_g = Up(m_c), v_g = Up(v_c);
    for (int64_t step = 1; step <= 5; ++step) {
      SCOPED_TRACE(::testing::Message() << "step " << step);
      const Tensor g = RandomHost({n}, 710 + static_cast<uint32_t>(step), -0.1f, 0.1f);
      const float lr = 1e-3f * static_cast<float>(step);
      ASSERT_TRUE(cpu_->AdamW(o, step, lr, g, &p_c, &m_c, &v_c).ok());
      ASSERT_TRUE(gpu_->AdamW(o, step, lr, Up(g), &p_g, &m_g, &v_g).ok());
      // The kernel repeats optimizer.cc's float operations one by one (no fused multiply-adds):
      // expected bit for bit; the bound leaves room for one rounding.
      ExpectClose(p_g, p_c, 1e-6, "param");
      ExpectClose(m_g, m_c, 1e-6, "m");
      ExpectClose(v_g, v_c, 1e-6, "v");
    }
  }
}

// ---- attention ----------------------------------------------------------------------------------

struct AttnCase {
  int64_t T, S, M, n_head, n_head_kv, d, dv;
  bool causal, mem_q, mem_bias;
  float scale;
};

const AttnCase kAttnCases[] = {
    {77, 77, 0, 9, 3, 64, 64, true, false, false, 0.0f},   // the default model, no memory
    {45, 100, 13, 9, 3, 64, 64, true, true, true, 0.0f},   // KV prefix, memory, mem_q, bias
    {33, 33, 40, 9, 3, 64, 64, false, false, true, 0.0f},  // non-causal, memory scored with q
    {50, 70, 5, 4, 2, 128, 96, true, false, false, 0.1f},  // d != dv, explicit scale
    {19, 19, 7, 2, 1, 256, 256, true, true, true, 0.0f},   // the largest head dims
    {1, 1, 0, 9, 3, 64, 64, true, false, false, 0.0f},     // one token
    {130, 130, 64, 9, 3, 64, 64, true, true, true, 0.0f},  // several tiles of keys and queries
    {20, 31, 3, 6, 6, 17, 33, true, false, true, 0.0f},    // MHA, odd head dims
    {24, 24, 0, 9, 3, 64, 64, true, false, true, 0.0f},    // a bias but no memory: no gradient
};

struct AttnData {
  AttentionTrainTensors in;  // host
  Tensor dout;
};

AttnData MakeAttnData(const AttnCase& c, uint32_t seed) {
  AttnData a;
  a.in.q = RandomHost({c.T, c.n_head, c.d}, seed++, -3.0f, 3.0f);
  a.in.k = RandomHost({c.S, c.n_head_kv, c.d}, seed++);
  a.in.v = RandomHost({c.S, c.n_head_kv, c.dv}, seed++);
  if (c.M > 0) {
    a.in.mem_k = RandomHost({c.M, c.n_head_kv, c.d}, seed++);
    a.in.mem_v = RandomHost({c.M, c.n_head_kv, c.dv}, seed++);
    if (c.mem_q) a.in.mem_q = RandomHost({c.T, c.n_head, c.d}, seed++, -3.0f, 3.0f);
  }
  if (c.mem_bias) a.in.mem_bias = RandomHost({c.n_head}, seed++, -2.0f, 1.0f);
  a.dout = RandomHost({c.T, c.n_head, c.dv}, seed++);
  return a;
}

AttentionTrainDims Dims(const AttnCase& c) {
  AttentionTrainDims d;
  d.T = c.T;
  d.S = c.S;
  d.M = c.M;
  d.n_head = c.n_head;
  d.n_head_kv = c.n_head_kv;
  d.d = c.d;
  d.dv = c.dv;
  d.scale = c.scale;
  d.causal = c.causal;
  return d;
}

TEST_F(TrainOpsGpu, Attention) {
  uint32_t seed = 800;
  for (const AttnCase& c : kAttnCases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.T << " S " << c.S << " M " << c.M << " heads "
                                    << c.n_head << "/" << c.n_head_kv << " d " << c.d << " dv "
                                    << c.dv << (c.causal ? " causal" : " full")
                                    << (c.mem_q ? " mem_q" : "") << (c.mem_bias ? " bias" : ""));
    const AttentionTrainDims dims = Dims(c);
    const AttnData h = MakeAttnData(c, seed);
    seed += 16;
    AttentionTrainTensors g;
    const auto up = [&](const Tensor& t) { return t.defined() ? Up(t) : Tensor(); };
    g.q = up(h.in.q);
    g.k = up(h.in.k);
    g.v = up(h.in.v);
    g.mem_q = up(h.in.mem_q);
    g.mem_k = up(h.in.mem_k);
    g.mem_v = up(h.in.mem_v);
    g.mem_bias = up(h.in.mem_bias);

    // Forward.
    Tensor out_c = Tensor::Empty(DType::kF32, {c.T, c.n_head, c.dv}).value();
    Tensor lse_c = Tensor::Empty(DType::kF32, {c.T, c.n_head}).value();
    ASSERT_TRUE(cpu_->AttentionForward(dims, h.in, &out_c, &lse_c).ok());
    Tensor out_g = gpu_be_->Allocate(DType::kF32, out_c.shape()).value();
    Tensor lse_g = gpu_be_->Allocate(DType::kF32, lse_c.shape()).value();
    ASSERT_TRUE(gpu_->AttentionForward(dims, g, &out_g, &lse_g).ok());
    ExpectClose(out_g, out_c, 1e-5, "out");
    ExpectClose(lse_g, lse_c, 1e-5, "lse");

    // Backward, each side from its own forward.
    const Tensor dmb0 = RandomHost({c.n_head}, seed++);
    Tensor dq_c = Tensor::Empty(DType::kF32, h.in.q.shape()).value();
    Tensor dk_c = Tensor::Empty(DType::kF32, h.in.k.shape()).value();
    Tensor dv_c = Tensor::Empty(DType::kF32, h.in.v.shape()).value();
    Tensor dmq_c, dmb_c;
    AttentionTrainGrads gc{&dq_c, &dk_c, &dv_c, nullptr, nullptr};
    if (h.in.mem_q.defined()) {
      dmq_c = Tensor::Empty(DType::kF32, h.in.q.shape()).value();
      gc.dmem_q = &dmq_c;
    }
    if (c.mem_bias) {
      dmb_c = CloneHost(dmb0);
      gc.dmem_bias = &dmb_c;
    }
    ASSERT_TRUE(cpu_->AttentionBackward(dims, h.in, out_c, lse_c, h.dout, gc).ok());

    const Tensor dout_g = Up(h.dout);
    Tensor dq_g = gpu_be_->Allocate(DType::kF32, h.in.q.shape()).value();
    Tensor dk_g = gpu_be_->Allocate(DType::kF32, h.in.k.shape()).value();
    Tensor dv_g = gpu_be_->Allocate(DType::kF32, h.in.v.shape()).value();
    Tensor dmq_g, dmb_g;
    AttentionTrainGrads gg{&dq_g, &dk_g, &dv_g, nullptr, nullptr};
    if (g.mem_q.defined()) {
      dmq_g = gpu_be_->Allocate(DType::kF32, h.in.q.shape()).value();
      gg.dmem_q = &dmq_g;
    }
    if (c.mem_bias) {
      dmb_g = Up(dmb0);
      gg.dmem_bias = &dmb_g;
    }
    ASSERT_TRUE(gpu_->AttentionBackward(dims, g, out_g, lse_g, dout_g, gg).ok());
    ExpectClose(dq_g, dq_c, 1e-4, "dq");
    ExpectClose(dk_g, dk_c, 1e-4, "dk");
    ExpectClose(dv_g, dv_c, 1e-4, "dv");
    if (gg.dmem_q != nullptr) ExpectClose(dmq_g, dmq_c, 1e-4, "dmem_q");
    if (gg.dmem_bias != nullptr) {
      // Compare what was added (the initial values would hide an error in a small gradient).
      const Tensor got = Down(dmb_g);
      Tensor add_g = CloneHost(got), add_c = CloneHost(dmb_c);
      for (int64_t i = 0; i < c.n_head; ++i) {
        add_g.data_as<float>()[i] -= Floats(dmb0)[i];
        add_c.data_as<float>()[i] -= Floats(dmb0)[i];
      }
      EXPECT_LE(NormMaxErr(add_g, add_c), 1e-3) << "dmem_bias";
      if (c.M == 0) {
        EXPECT_TRUE(SameBits(got, dmb0)) << "dmem_bias unchanged without memory";
      }
    }
  }
}

TEST_F(TrainOpsGpu, AttentionRefusesHeadDimsAbove256) {
  AttnCase c{4, 4, 0, 2, 1, 264, 64, true, false, false, 0.0f};
  const AttnData h = MakeAttnData(c, 900);
  AttentionTrainTensors g;
  g.q = Up(h.in.q);
  g.k = Up(h.in.k);
  g.v = Up(h.in.v);
  Tensor out_g = gpu_be_->Allocate(DType::kF32, {c.T, c.n_head, c.dv}).value();
  Tensor lse_g = gpu_be_->Allocate(DType::kF32, {c.T, c.n_head}).value();
  const Status st = gpu_->AttentionForward(Dims(c), g, &out_g, &lse_g);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
}

// ---- cross-entropy ------------------------------------------------------------------------------

struct CeCase {
  int64_t T, n_embd, n_vocab;
  CrossEntropyOptions options;
  bool want_dh;
  int ignore_every;  // every n-th label (and the first) is kIgnoreLabel; 1: all of them
};

CrossEntropyOptions CeOptions(float grad_scale, int64_t rows, int64_t vocab) {
  CrossEntropyOptions o;
  o.grad_scale = grad_scale;
  o.rows_per_block = rows;
  o.vocab_block = vocab;
  return o;
}

std::vector<int32_t> CeLabels(const CeCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> u(0, static_cast<int32_t>(c.n_vocab - 1));
  std::vector<int32_t> labels(static_cast<size_t>(c.T));
  for (int64_t t = 0; t < c.T; ++t) {
    labels[static_cast<size_t>(t)] = (t == 0 || t % c.ignore_every == 0) ? kIgnoreLabel : u(rng);
  }
  if (c.T > 2 && c.ignore_every > 1) labels[2] = static_cast<int32_t>(c.n_vocab - 1);  // last entry
  return labels;
}

TEST_F(TrainOpsGpu, CrossEntropy) {
  const CeCase cases[] = {
      {300, 576, 49152, CrossEntropyOptions{}, true, 7},       // the default model's head
      {300, 576, 49152, CeOptions(0.0f, 64, 5000), false, 5},  // loss only, odd vocab tiles
      {77, 64, 1001, CeOptions(0.5f, 16, 300), true, 4},       // explicit grad_scale, small tiles
      {33, 40, 7, CeOptions(0.0f, 1024, 4096), true, 1000},    // tiny vocabulary, one tile
      {20, 64, 100, CrossEntropyOptions{}, true, 1},           // every label ignored
  };
  uint32_t seed = 1000;
  for (const CeCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << c.T << " n_embd " << c.n_embd << " vocab "
                                    << c.n_vocab << " rows/block " << c.options.rows_per_block
                                    << " vocab/block " << c.options.vocab_block);
    const Tensor h = RandomHost({c.T, c.n_embd}, seed++);
    const Tensor w = RandomHost({c.n_vocab, c.n_embd}, seed++, -0.2f, 0.2f);
    const std::vector<int32_t> labels = CeLabels(c, seed++);
    Tensor dh_c = Tensor::Empty(DType::kF32, h.shape()).value();
    auto rc = cpu_->CrossEntropy(h, w, labels, c.options, c.want_dh ? &dh_c : nullptr);
    ASSERT_TRUE(rc.ok()) << rc.status();
    const Tensor h_g = Up(h), w_g = Up(w);
    Tensor dh_g = Up(RandomHost(h.shape(), seed++));  // garbage: dh is written
    auto rg = gpu_->CrossEntropy(h_g, w_g, labels, c.options, c.want_dh ? &dh_g : nullptr);
    ASSERT_TRUE(rg.ok()) << rg.status();
    EXPECT_EQ(rg->n_supervised, rc->n_supervised);
    if (rc->n_supervised == 0) {
      EXPECT_EQ(rg->loss_sum, 0.0);
    } else {
      EXPECT_NEAR(rg->loss_sum, rc->loss_sum, 1e-5 * std::fabs(rc->loss_sum));
      EXPECT_GT(rc->mean(), 0.0);
    }
    if (!c.want_dh) continue;
    const Tensor got = Down(dh_g);
    EXPECT_LE(NormMaxErr(got, dh_c), 1e-4) << "dh";
    // Ignored rows: exactly zero.
    int64_t nonzero_ignored = 0;
    for (int64_t t = 0; t < c.T; ++t) {
      if (labels[static_cast<size_t>(t)] != kIgnoreLabel) continue;
      for (int64_t i = 0; i < c.n_embd; ++i)
        nonzero_ignored += Floats(got)[t * c.n_embd + i] != 0.0f;
    }
    EXPECT_EQ(nonzero_ignored, 0);
  }
}

// ---- determinism --------------------------------------------------------------------------------

// The same CUDA calls twice on the same inputs give the same bits (no atomics, fixed orders).
TEST_F(TrainOpsGpu, RepeatedCallsGiveIdenticalBits) {
  // LoRA backward with dropout (sgemm + mask kernel).
  {
    const LoraDims d = Lora(67, 576, 192, 8, 0.1f, 5);
    const Tensor dy = Up(RandomHost({d.m, d.n_out}, 1)), xd = Up(RandomHost({d.m, d.n_in}, 2));
    const Tensor u = Up(RandomHost({d.m, d.rank}, 3)), a = Up(RandomHost({d.rank, d.n_in}, 4));
    const Tensor b = Up(RandomHost({d.n_out, d.rank}, 5));
    const Tensor da0 = RandomHost({d.rank, d.n_in}, 6), db0 = RandomHost({d.n_out, d.rank}, 7),
                 dx0 = RandomHost({d.m, d.n_in}, 8);
    Tensor run[2][3];
    for (auto& r : run) {
      Tensor da = Up(da0), db = Up(db0), dx = Up(dx0);
      ASSERT_TRUE(gpu_->LoraBackward(d, dy, xd, u, a, b, &da, &db, &dx).ok());
      r[0] = Down(da);
      r[1] = Down(db);
      r[2] = Down(dx);
    }
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(SameBits(run[0][i], run[1][i])) << "LoRA output " << i;
  }
  // RMSNorm backward (row reductions, dw over row chunks).
  {
    const Tensor x = Up(RandomHost({300, 576}, 10)), w = Up(RandomHost({576}, 11));
    const Tensor dy = Up(RandomHost({300, 576}, 12));
    const Tensor dw0 = RandomHost({576}, 13);
    Tensor run[2][2];
    for (auto& r : run) {
      Tensor dx = gpu_be_->Allocate(DType::kF32, {300, 576}).value(), dw = Up(dw0);
      ASSERT_TRUE(gpu_->RmsNormBackward(x, w, dy, 1e-5f, &dx, &dw).ok());
      r[0] = Down(dx);
      r[1] = Down(dw);
    }
    EXPECT_TRUE(SameBits(run[0][0], run[1][0])) << "RMSNorm dx";
    EXPECT_TRUE(SameBits(run[0][1], run[1][1])) << "RMSNorm dw";
  }
  // Attention forward and backward with memory, mem_q and bias.
  {
    const AttnCase c = kAttnCases[6];
    const AttentionTrainDims dims = Dims(c);
    const AttnData h = MakeAttnData(c, 20);
    AttentionTrainTensors g;
    g.q = Up(h.in.q);
    g.k = Up(h.in.k);
    g.v = Up(h.in.v);
    g.mem_q = Up(h.in.mem_q);
    g.mem_k = Up(h.in.mem_k);
    g.mem_v = Up(h.in.mem_v);
    g.mem_bias = Up(h.in.mem_bias);
    const Tensor dout = Up(h.dout);
    Tensor run[2][7];
    for (auto& r : run) {
      Tensor out = gpu_be_->Allocate(DType::kF32, {c.T, c.n_head, c.dv}).value();
      Tensor lse = gpu_be_->Allocate(DType::kF32, {c.T, c.n_head}).value();
      ASSERT_TRUE(gpu_->AttentionForward(dims, g, &out, &lse).ok());
      Tensor dq = gpu_be_->Allocate(DType::kF32, h.in.q.shape()).value();
      Tensor dk = gpu_be_->Allocate(DType::kF32, h.in.k.shape()).value();
      Tensor dv = gpu_be_->Allocate(DType::kF32, h.in.v.shape()).value();
      Tensor dmq = gpu_be_->Allocate(DType::kF32, h.in.q.shape()).value();
      Tensor dmb = Up(Tensor::Zeros(DType::kF32, {c.n_head}).value());
      ASSERT_TRUE(
          gpu_->AttentionBackward(dims, g, out, lse, dout, {&dq, &dk, &dv, &dmq, &dmb}).ok());
      r[0] = Down(out);
      r[1] = Down(lse);
      r[2] = Down(dq);
      r[3] = Down(dk);
      r[4] = Down(dv);
      r[5] = Down(dmq);
      r[6] = Down(dmb);
    }
    for (int i = 0; i < 7; ++i)
      EXPECT_TRUE(SameBits(run[0][i], run[1][i])) << "attention output " << i;
  }
  // Cross-entropy: the loss and dh.
  {
    const CeCase c{77, 64, 1001, CeOptions(0.0f, 16, 300), true, 4};
    const Tensor h = Up(RandomHost({c.T, c.n_embd}, 30));
    const Tensor w = Up(RandomHost({c.n_vocab, c.n_embd}, 31, -0.2f, 0.2f));
    const std::vector<int32_t> labels = CeLabels(c, 32);
    double loss[2] = {0.0, 0.0};
    Tensor dh[2];
    for (int i = 0; i < 2; ++i) {
      Tensor d = gpu_be_->Allocate(DType::kF32, {c.T, c.n_embd}).value();
      auto r = gpu_->CrossEntropy(h, w, labels, c.options, &d);
      ASSERT_TRUE(r.ok()) << r.status();
      loss[i] = r->loss_sum;
      dh[i] = Down(d);
    }
    EXPECT_EQ(std::memcmp(&loss[0], &loss[1], sizeof(double)), 0) << loss[0] << " vs " << loss[1];
    EXPECT_TRUE(SameBits(dh[0], dh[1])) << "cross-entropy dh";
  }
}

}  // namespace
}  // namespace muninn
