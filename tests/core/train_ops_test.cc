// TrainOps on the CPU backend (train_ops.h): each op gives the bits of the host kernel it wraps,
// and the entry points refuse bad arguments with InvalidArgument before writing anything.
#include "muninn/core/train_ops.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "muninn/core/cpu_backend.h"

namespace muninn {
namespace {

class TrainOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto be = CreateCpuBackend(CpuBackendOptions{.pool = &pool_});
    ASSERT_TRUE(be.ok()) << be.status();
    backend_ = std::move(be).value();
    auto ops = backend_->CreateTrainOps(nullptr);
    ASSERT_TRUE(ops.ok()) << ops.status();
    ops_ = std::move(ops).value();
  }
  Tensor Random(const Shape& shape, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    auto t = Tensor::Empty(DType::kF32, shape);
    MUNINN_CHECK(t.ok());
    for (int64_t i = 0; i < t->numel(); ++i) t->data_as<float>()[i] = u(rng_);
    return *t;
  }
  static Tensor Copy(const Tensor& t) {
    Tensor c = Tensor::Empty(t.dtype(), t.shape()).value();
    std::memcpy(c.data(), t.data(), t.nbytes());
    return c;
  }
  static void ExpectSameBits(const Tensor& a, const Tensor& b, const char* what) {
    ASSERT_EQ(a.numel(), b.numel()) << what;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << what;
  }
  static const float* F(const Tensor& t) { return t.data_as<const float>(); }
  static float* F(Tensor& t) { return t.data_as<float>(); }

  ThreadPool pool_{2};
  std::mt19937 rng_{7};
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TrainOps> ops_;
};

TEST_F(TrainOpsTest, CpuOpsAreTheHostKernels) {
  EXPECT_EQ(ops_->device(), Device::Cpu());
  const int64_t m = 13, n_in = 24, n_out = 20, rank = 4;
  const Tensor x = Random({m, n_in}), w = Random({n_out, n_in}), dy = Random({m, n_out});
  // Linear and its input gradient (accumulating).
  Tensor y = Random({m, n_out}), y_ref = Copy(y);
  ASSERT_TRUE(ops_->Linear(x, w, &y).ok());
  LinearForward(F(x), F(w), m, n_out, n_in, F(y_ref));
  ExpectSameBits(y, y_ref, "Linear");
  Tensor dx = Random({m, n_in}), dx_ref = Copy(dx);
  ASSERT_TRUE(ops_->LinearBackwardInput(dy, w, /*accumulate=*/true, &dx).ok());
  LinearBackwardInput(F(dy), F(w), m, n_out, n_in, F(dx_ref), true);
  ExpectSameBits(dx, dx_ref, "LinearBackwardInput");
  // LoRA with dropout.
  const LoraDims d{m, n_in, n_out, rank, 2.0f, 0.25f, 11};
  const Tensor a = Random({rank, n_in}), b = Random({n_out, rank});
  Tensor xd = Random({m, n_in}), xd_ref = Copy(xd);
  ASSERT_TRUE(ops_->LoraDropout(d, x, &xd).ok());
  LoraDropout(d, F(x), F(xd_ref));
  ExpectSameBits(xd, xd_ref, "LoraDropout");
  Tensor u = Random({m, rank}), u_ref = Copy(u);
  ASSERT_TRUE(ops_->LoraForward(d, xd, a, b, &u, &y).ok());
  LoraForward(d, F(xd_ref), F(a), F(b), F(u_ref), F(y_ref));
  ExpectSameBits(u, u_ref, "LoraForward u");
  ExpectSameBits(y, y_ref, "LoraForward y");
  Tensor da = Random({rank, n_in}), db = Random({n_out, rank});
  Tensor da_ref = Copy(da), db_ref = Copy(db);
  ASSERT_TRUE(ops_->LoraBackward(d, dy, xd, u, a, b, &da, &db, &dx).ok());
  LoraBackward(d, F(dy), F(xd_ref), F(u_ref), F(a), F(b), F(da_ref), F(db_ref), F(dx_ref));
  ExpectSameBits(da, da_ref, "LoraBackward da");
  ExpectSameBits(db, db_ref, "LoraBackward db");
  ExpectSameBits(dx, dx_ref, "LoraBackward dx");
  // RMSNorm both ways, SwiGLU both ways.
  const Tensor nw = Random({n_in});
  Tensor ny = Random({m, n_in}), ny_ref = Copy(ny);
  ASSERT_TRUE(ops_->RmsNormForward(x, nw, 1e-5f, &ny).ok());
  auto scalar = CreateCpuBackend(CpuBackendOptions{.isa = CpuIsa::kScalar});  // the references
  ASSERT_TRUE(scalar.ok()) << scalar.status();
  ASSERT_TRUE((*scalar)->RmsNorm(x, nw, 1e-5f, &ny_ref).ok());
  ExpectSameBits(ny, ny_ref, "RmsNormForward");
  const Tensor ndy = Random({m, n_in});
  Tensor ndx = Random({m, n_in}), ndw = Random({n_in});
  Tensor ndx_ref = Copy(ndx), ndw_ref = Copy(ndw);
  ASSERT_TRUE(ops_->RmsNormBackward(x, nw, ndy, 1e-5f, &ndx, &ndw).ok());
  RmsNormBackward(nullptr, F(x), F(nw), F(ndy), m, n_in, 1e-5f, F(ndx_ref), F(ndw_ref));
  ExpectSameBits(ndx, ndx_ref, "RmsNormBackward dx");
  ExpectSameBits(ndw, ndw_ref, "RmsNormBackward dw");
  const Tensor g = Random({m, n_in}, 4.0f), up = Random({m, n_in});
  Tensor act = Random({m, n_in}), act_ref = Copy(act);
  ASSERT_TRUE(ops_->SwiGluForward(g, up, &act).ok());
  ASSERT_TRUE((*scalar)->SwiGlu(g, up, &act_ref).ok());
  ExpectSameBits(act, act_ref, "SwiGluForward");
  Tensor dg = Random({m, n_in}), du = Random({m, n_in}), dg_ref = Copy(dg), du_ref = Copy(du);
  ASSERT_TRUE(ops_->SwiGluBackward(g, up, ndy, &dg, &du).ok());
  SwiGluBackward(nullptr, F(g), F(up), F(ndy), m * n_in, F(dg_ref), F(du_ref));
  ExpectSameBits(dg, dg_ref, "SwiGluBackward dgate");
  ExpectSameBits(du, du_ref, "SwiGluBackward dup");
  // RoPE backward in place, positions on the host.
  auto pos = Tensor::Empty(DType::kI32, Shape{m}).value();
  for (int64_t t = 0; t < m; ++t) pos.data_as<int32_t>()[t] = static_cast<int32_t>(5 + 3 * t);
  Tensor rq = Random({m, 3, 8}), rq_ref = Copy(rq);
  ASSERT_TRUE(ops_->RopeBackward(rq, pos, RopeParams{}, &rq).ok());
  ASSERT_TRUE(RopeBackward(nullptr, F(rq_ref), pos.data_as<const int32_t>(), m, 3, 8, RopeParams{},
                           F(rq_ref))
                  .ok());
  ExpectSameBits(rq, rq_ref, "RopeBackward");
  // AdamW.
  Tensor p = Random({n_in}), mo = Random({n_in}, 0.1f), ve = Random({n_in}, 0.1f);
  for (int64_t i = 0; i < n_in; ++i) F(ve)[i] = std::abs(F(ve)[i]);
  Tensor p_ref = Copy(p), mo_ref = Copy(mo), ve_ref = Copy(ve);
  ASSERT_TRUE(ops_->AdamW(AdamWOptions{}, 3, 1e-2f, nw, &p, &mo, &ve).ok());
  AdamWStep(AdamWOptions{}, 3, 1e-2f, F(p_ref), F(nw), F(mo_ref), F(ve_ref), n_in);
  ExpectSameBits(p, p_ref, "AdamW param");
  ExpectSameBits(ve, ve_ref, "AdamW v");
}

TEST_F(TrainOpsTest, AttentionAndCrossEntropyAreTheHostKernels) {
  AttentionTrainDims dims;
  dims.T = 9;
  dims.S = 11;
  dims.M = 5;
  dims.n_head = 4;
  dims.n_head_kv = 2;
  dims.d = 8;
  dims.dv = 8;
  AttentionTrainTensors in;
  in.q = Random({9, 4, 8});
  in.k = Random({11, 2, 8});
  in.v = Random({11, 2, 8});
  in.mem_q = Random({9, 4, 8});
  in.mem_k = Random({5, 2, 8});
  in.mem_v = Random({5, 2, 8});
  in.mem_bias = Random({4});
  Tensor out = Random({9, 4, 8}), lse = Random({9, 4});
  Tensor out_ref = Copy(out), lse_ref = Copy(lse);
  ASSERT_TRUE(ops_->AttentionForward(dims, in, &out, &lse).ok());
  AttentionForwardTrain(nullptr, dims, F(in.q), F(in.k), F(in.v), F(in.mem_q), F(in.mem_k),
                        F(in.mem_v), F(out_ref), F(lse_ref), F(in.mem_bias));
  ExpectSameBits(out, out_ref, "attention out");
  ExpectSameBits(lse, lse_ref, "attention lse");
  const Tensor dout = Random({9, 4, 8});
  Tensor dq = Random({9, 4, 8}), dk = Random({11, 2, 8}), dv = Random({11, 2, 8});
  Tensor dmq = Random({9, 4, 8}), dmb = Random({4});
  Tensor dq_ref = Copy(dq), dk_ref = Copy(dk), dv_ref = Copy(dv), dmq_ref = Copy(dmq),
         dmb_ref = Copy(dmb);
  ASSERT_TRUE(ops_->AttentionBackward(dims, in, out, lse, dout, {&dq, &dk, &dv, &dmq, &dmb}).ok());
  AttentionBackward(nullptr, dims, F(in.q), F(in.k), F(in.v), F(in.mem_q), F(in.mem_k), F(in.mem_v),
                    F(out_ref), F(lse_ref), F(dout), F(dq_ref), F(dk_ref), F(dv_ref), F(dmq_ref),
                    F(in.mem_bias), F(dmb_ref));
  for (auto [got, want, what] : {std::tuple{&dq, &dq_ref, "dq"},
                                 {&dk, &dk_ref, "dk"},
                                 {&dv, &dv_ref, "dv"},
                                 {&dmq, &dmq_ref, "dmem_q"},
                                 {&dmb, &dmb_ref, "dmem_bias"}}) {
    ExpectSameBits(*got, *want, what);
  }
  const Tensor h = Random({7, 16}), w = Random({50, 16});
  const std::vector<int32_t> labels = {3, kIgnoreLabel, 49, 0, 17, kIgnoreLabel, 8};
  CrossEntropyOptions ce;
  ce.rows_per_block = 3;
  ce.vocab_block = 16;
  Tensor dh = Random({7, 16}), dh_ref = Copy(dh);
  auto got = ops_->CrossEntropy(h, w, labels, ce, &dh);
  auto want = FusedCrossEntropy(nullptr, F(h), F(w), labels.data(), 7, 16, 50, F(dh_ref), ce);
  ASSERT_TRUE(got.ok() && want.ok()) << got.status();
  EXPECT_EQ(got->loss_sum, want->loss_sum);
  EXPECT_EQ(got->n_supervised, 5);
  ExpectSameBits(dh, dh_ref, "cross-entropy dh");
}

TEST_F(TrainOpsTest, BadArgumentsAreRefusedBeforeAnythingIsWritten) {
  const Tensor x = Random({6, 8}), w = Random({5, 8});
  Tensor y = Random({6, 5});
  const Tensor before = Copy(y);
  auto refused = [&](const Status& s, const char* what, const char* words) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s;
    EXPECT_NE(s.ToString().find(words), std::string::npos) << what << ": " << s;
    ExpectSameBits(y, before, what);
  };
  refused(ops_->Linear(x, Random({5, 7}), &y), "w of another width", "does not fit");
  Tensor wrong_out = Random({6, 4});
  refused(ops_->Linear(x, w, &wrong_out), "output shape", "must have shape");
  auto half = Tensor::Empty(DType::kF16, Shape{6, 8}).value();
  refused(ops_->Linear(half, w, &y), "f16 input", "must be f32");
  auto strided = Random({6, 16}).Slice(1, 0, 8).value();
  refused(ops_->Linear(strided, w, &y), "strided input", "packed");
  refused(ops_->Linear(x, w, nullptr), "null output", "is null");
  Tensor alias = x;
  refused(ops_->RmsNormForward(x, Random({8}), 1e-5f, &alias), "output over the input", "overlaps");
  refused(ops_->LoraForward(LoraDims{6, 8, 5, 2, 1.0f, 1.5f, 0}, x, Random({2, 8}), Random({5, 2}),
                            &alias, &y),
          "dropout >= 1", "dropout");
  Tensor h = Random({3, 8});
  const Tensor hb = Copy(h);
  auto ce = ops_->CrossEntropy(Random({3, 8}), Random({10, 8}), std::vector<int32_t>{1, 10, 2},
                               CrossEntropyOptions{}, &h);
  EXPECT_EQ(ce.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ce.status().ToString().find("label 10 at row 1"), std::string::npos) << ce.status();
  ExpectSameBits(h, hb, "cross-entropy dh after a bad label");
  AttentionTrainDims dims;
  dims.T = 4;
  dims.S = 3;  // causal needs T <= S
  dims.n_head = 2;
  dims.n_head_kv = 1;
  dims.d = dims.dv = 4;
  AttentionTrainTensors in;
  in.q = Random({4, 2, 4});
  in.k = Random({3, 1, 4});
  in.v = Random({3, 1, 4});
  Tensor out = Random({4, 2, 4}), lse = Random({4, 2});
  EXPECT_EQ(ops_->AttentionForward(dims, in, &out, &lse).code(), StatusCode::kInvalidArgument);
  {
    AttentionTrainDims none = dims;  // queries without a single key: refused, not a CHECK
    none.causal = false;
    none.S = 0;
    AttentionTrainTensors empty;
    empty.q = in.q;
    empty.k = Random({0, 1, 4});
    empty.v = Random({0, 1, 4});
    auto st = ops_->AttentionForward(none, empty, &out, &lse);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.ToString().find("no keys"), std::string::npos) << st;
  }
  dims.S = 4;
  in.k = Random({4, 1, 4});
  in.v = Random({4, 1, 4});
  in.mem_q = Random({4, 2, 4});  // mem_q without dmem_q
  Tensor dq = Random({4, 2, 4}), dk = Random({4, 1, 4}), dv = Random({4, 1, 4});
  const Tensor dq_before = Copy(dq);
  ASSERT_TRUE(ops_->AttentionForward(dims, in, &out, &lse).ok());
  auto s = ops_->AttentionBackward(dims, in, out, lse, Random({4, 2, 4}),
                                   {&dq, &dk, &dv, nullptr, nullptr});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("dmem_q"), std::string::npos) << s;
  ExpectSameBits(dq, dq_before, "dq after a refused backward");
  auto pos = Tensor::Empty(DType::kI32, Shape{3}).value();
  Tensor r = Random({4, 2, 4});
  EXPECT_EQ(ops_->RopeBackward(r, pos, RopeParams{}, &r).code(), StatusCode::kInvalidArgument);
  // A position the backward cannot negate is refused at the entry point, for every backend.
  auto pos4 = Tensor::Zeros(DType::kI32, Shape{4}).value();
  pos4.data_as<int32_t>()[2] = std::numeric_limits<int32_t>::min();
  const Tensor r_before = Copy(r);
  auto neg = ops_->RopeBackward(r, pos4, RopeParams{}, &r);
  EXPECT_EQ(neg.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(neg.ToString().find("INT32_MIN"), std::string::npos) << neg;
  ExpectSameBits(r, r_before, "RopeBackward after a refused position");
  Tensor p = Random({8}), m = Random({8}), v = Random({8});
  EXPECT_EQ(ops_->AdamW(AdamWOptions{}, 0, 1e-3f, Random({8}), &p, &m, &v).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace muninn
