// Training attention (attention_backward.h): the forward against the CPU backend's Attention and a
// float64 reference, and every gradient against float64 central finite differences, over
// [memory ; local] with GQA ratio 3, memory block empty and non-empty, causal and not, with and
// without separate memory queries, with and without a per-head memory logit bias (whose gradient
// is checked too).
#include "muninn/core/attention_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "tests/core/grad_check_util.h"

namespace muninn {
namespace {

using testing_grad::Contract;
using testing_grad::GradClose;
using testing_grad::NumericGrad;
using testing_grad::Random;
using testing_grad::ToDouble;

struct Case {
  int64_t T, S, M;
  bool causal;
  bool mem_q;
  int64_t d = 5, dv = 7;  // head dims (>= 8 exercises the vectorised loops and their tails)
  bool bias = false;      // a per-head memory logit bias (AttentionParams::mem_bias)
};

struct RefOut {
  std::vector<double> out, lse;
};

// Float64 attention straight from the definition.
RefOut RefAttention(const AttentionTrainDims& g, const std::vector<double>& q,
                    const std::vector<double>& k, const std::vector<double>& v,
                    const std::vector<double>* mq, const std::vector<double>& mk,
                    const std::vector<double>& mv, const std::vector<double>* mb = nullptr) {
  const int64_t G = g.n_head / g.n_head_kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(g.d));
  RefOut r;
  r.out.assign(static_cast<size_t>(g.T * g.n_head * g.dv), 0.0);
  r.lse.assign(static_cast<size_t>(g.T * g.n_head), 0.0);
  for (int64_t t = 0; t < g.T; ++t) {
    for (int64_t h = 0; h < g.n_head; ++h) {
      const int64_t kvh = h / G, row = t * g.n_head + h;
      std::vector<double> sc;
      std::vector<const double*> vals;
      for (int64_t j = 0; j < g.M; ++j) {
        const std::vector<double>& qq = mq != nullptr ? *mq : q;
        double s = 0.0;
        for (int64_t i = 0; i < g.d; ++i) {
          s += qq[static_cast<size_t>(row * g.d + i)] *
               mk[static_cast<size_t>((j * g.n_head_kv + kvh) * g.d + i)];
        }
        sc.push_back(s * scale + (mb != nullptr ? (*mb)[static_cast<size_t>(h)] : 0.0));
        vals.push_back(&mv[static_cast<size_t>((j * g.n_head_kv + kvh) * g.dv)]);
      }
      for (int64_t s = 0; s < g.S; ++s) {
        if (g.causal && s > t + (g.S - g.T)) continue;
        double d = 0.0;
        for (int64_t i = 0; i < g.d; ++i) {
          d += q[static_cast<size_t>(row * g.d + i)] *
               k[static_cast<size_t>((s * g.n_head_kv + kvh) * g.d + i)];
        }
        sc.push_back(d * scale);
        vals.push_back(&v[static_cast<size_t>((s * g.n_head_kv + kvh) * g.dv)]);
      }
      double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (const double s : sc) mx = std::max(mx, s);
      for (const double s : sc) sum += std::exp(s - mx);
      for (size_t j = 0; j < sc.size(); ++j) {
        const double p = std::exp(sc[j] - mx) / sum;
        for (int64_t i = 0; i < g.dv; ++i)
          r.out[static_cast<size_t>(row * g.dv + i)] += p * vals[j][i];
      }
      r.lse[static_cast<size_t>(row)] = mx + std::log(sum);
    }
  }
  return r;
}

class AttentionBackwardTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionBackwardTest, MatchesBackendForwardAndFiniteDifferences) {
  const Case c = GetParam();
  AttentionTrainDims g;
  g.T = c.T;
  g.S = c.S;
  g.M = c.M;
  g.n_head = 6;
  g.n_head_kv = 2;  // GQA ratio 3
  g.d = c.d;
  g.dv = c.dv;
  g.causal = c.causal;
  std::mt19937 rng(static_cast<uint32_t>(c.T * 100 + c.S * 10 + c.M + (c.causal ? 7 : 0) +
                                         (c.mem_q ? 13 : 0) + (c.bias ? 29 : 0)));
  const auto q = Random(g.T * g.n_head * g.d, rng, -1.5f, 1.5f);
  const auto mq = Random(g.T * g.n_head * g.d, rng, -1.5f, 1.5f);
  const auto k = Random(g.S * g.n_head_kv * g.d, rng, -1.5f, 1.5f);
  const auto v = Random(g.S * g.n_head_kv * g.dv, rng);
  const auto mk = Random(g.M * g.n_head_kv * g.d, rng, -1.5f, 1.5f);
  const auto mv = Random(g.M * g.n_head_kv * g.dv, rng);
  const auto dout = Random(g.T * g.n_head * g.dv, rng);
  const auto mb = Random(g.n_head, rng, -1.5f, 1.5f);
  const float* mb_ptr = c.bias ? mb.data() : nullptr;
  const float* mq_ptr = c.mem_q ? mq.data() : nullptr;
  const float* mk_ptr = g.M > 0 ? mk.data() : nullptr;
  const float* mv_ptr = g.M > 0 ? mv.data() : nullptr;

  ThreadPool pool(2);
  std::vector<float> out(dout.size()), lse(static_cast<size_t>(g.T * g.n_head));
  AttentionForwardTrain(&pool, g, q.data(), k.data(), v.data(), mq_ptr, mk_ptr, mv_ptr, out.data(),
                        lse.data(), mb_ptr);

  // Against the backend's inference kernel.
  CpuBackendOptions o;
  o.pool = &pool;
  auto be = CreateCpuBackend(o).value();
  const auto tensor = [](const Shape& s, const std::vector<float>& x) {
    return Tensor::FromVector(s, x).value();
  };
  Tensor qt = tensor({g.T, g.n_head, g.d}, q), mqt = tensor({g.T, g.n_head, g.d}, mq);
  Tensor kt = tensor({g.S, g.n_head_kv, g.d}, k), vt = tensor({g.S, g.n_head_kv, g.dv}, v);
  Tensor mkt, mvt;
  if (g.M > 0) {
    mkt = tensor({g.M, g.n_head_kv, g.d}, mk);
    mvt = tensor({g.M, g.n_head_kv, g.dv}, mv);
  }
  AttentionParams ap;
  ap.causal = g.causal;
  if (c.mem_q) ap.mem_q = &mqt;
  ap.mem_bias = mb_ptr;
  Tensor ot = Tensor::Empty(DType::kF32, Shape{g.T, g.n_head, g.dv}).value();
  ASSERT_TRUE(be->Attention(qt, kt, vt, mkt, mvt, ap, &ot).ok());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ot.data_as<float>()[i], 2e-6f) << i;

  const auto qd = ToDouble(q), mqd = ToDouble(mq), kd = ToDouble(k), vd = ToDouble(v),
             mkd = ToDouble(mk), mvd = ToDouble(mv), mbd = ToDouble(mb);
  const auto* mbp = c.bias ? &mbd : nullptr;
  const RefOut ref = RefAttention(g, qd, kd, vd, c.mem_q ? &mqd : nullptr, mkd, mvd, mbp);
  EXPECT_TRUE(GradClose(out, ref.out, 1e-5));
  for (size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(lse[i], ref.lse[i], 1e-5) << i;

  std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN), dmq(q.size(), NAN);
  // The bias gradient is added to what is there.
  constexpr float kDbStart = 0.25f;
  std::vector<float> db(mb.size(), kDbStart);
  AttentionBackward(&pool, g, q.data(), k.data(), v.data(), mq_ptr, mk_ptr, mv_ptr, out.data(),
                    lse.data(), dout.data(), dq.data(), dk.data(), dv.data(),
                    c.mem_q ? dmq.data() : nullptr, mb_ptr, c.bias ? db.data() : nullptr);
  const auto* mqp = c.mem_q ? &mqd : nullptr;
  EXPECT_TRUE(GradClose(dq, NumericGrad(
                                [&](const auto& p) {
                                  return Contract(
                                      RefAttention(g, p, kd, vd, mqp, mkd, mvd, mbp).out, dout);
                                },
                                qd)));
  EXPECT_TRUE(GradClose(dk, NumericGrad(
                                [&](const auto& p) {
                                  return Contract(
                                      RefAttention(g, qd, p, vd, mqp, mkd, mvd, mbp).out, dout);
                                },
                                kd)));
  EXPECT_TRUE(GradClose(dv, NumericGrad(
                                [&](const auto& p) {
                                  return Contract(
                                      RefAttention(g, qd, kd, p, mqp, mkd, mvd, mbp).out, dout);
                                },
                                vd)));
  if (c.mem_q) {
    EXPECT_TRUE(GradClose(dmq, NumericGrad(
                                   [&](const auto& p) {
                                     return Contract(
                                         RefAttention(g, qd, kd, vd, &p, mkd, mvd, mbp).out, dout);
                                   },
                                   mqd)));
  }

  if (c.bias) {
    if (g.M == 0) {
      EXPECT_EQ(db, std::vector<float>(mb.size(), kDbStart));  // no memory: untouched
    } else {
      std::vector<float> db_added(db.size());
      for (size_t i = 0; i < db.size(); ++i) db_added[i] = db[i] - kDbStart;
      EXPECT_TRUE(GradClose(
          db_added, NumericGrad(
                        [&](const auto& p) {
                          return Contract(RefAttention(g, qd, kd, vd, mqp, mkd, mvd, &p).out, dout);
                        },
                        mbd)));
    }
  }

  // Same bits on one thread.
  std::vector<float> dq1(q.size()), dk1(k.size()), dv1(v.size()), dmq1(q.size());
  std::vector<float> db1(mb.size(), kDbStart);
  AttentionBackward(nullptr, g, q.data(), k.data(), v.data(), mq_ptr, mk_ptr, mv_ptr, out.data(),
                    lse.data(), dout.data(), dq1.data(), dk1.data(), dv1.data(),
                    c.mem_q ? dmq1.data() : nullptr, mb_ptr, c.bias ? db1.data() : nullptr);
  EXPECT_EQ(dq, dq1);
  EXPECT_EQ(dk, dk1);
  EXPECT_EQ(dv, dv1);
  EXPECT_EQ(db, db1);
  if (c.mem_q) {
    EXPECT_EQ(dmq, dmq1);
  }

  // Every other kernel family this CPU runs agrees up to float rounding.
  for (const CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (static_cast<int>(isa) > static_cast<int>(GetCpuFeatures().BestIsa())) continue;
    SCOPED_TRACE(testing::Message() << "isa " << static_cast<int>(isa));
    AttentionTrainDims gi = g;
    gi.isa = isa;
    std::vector<float> oi(out.size()), li(lse.size());
    AttentionForwardTrain(&pool, gi, q.data(), k.data(), v.data(), mq_ptr, mk_ptr, mv_ptr,
                          oi.data(), li.data(), mb_ptr);
    std::vector<float> dqi(q.size()), dki(k.size()), dvi(v.size()), dmqi(q.size());
    std::vector<float> dbi(mb.size(), kDbStart);
    AttentionBackward(&pool, gi, q.data(), k.data(), v.data(), mq_ptr, mk_ptr, mv_ptr, oi.data(),
                      li.data(), dout.data(), dqi.data(), dki.data(), dvi.data(),
                      c.mem_q ? dmqi.data() : nullptr, mb_ptr, c.bias ? dbi.data() : nullptr);
    EXPECT_TRUE(GradClose(dbi, ToDouble(db), 1e-5));
    EXPECT_TRUE(GradClose(oi, ToDouble(out), 1e-5));
    EXPECT_TRUE(GradClose(li, ToDouble(lse), 1e-5));
    EXPECT_TRUE(GradClose(dqi, ToDouble(dq), 1e-5));
    EXPECT_TRUE(GradClose(dki, ToDouble(dk), 1e-5));
    EXPECT_TRUE(GradClose(dvi, ToDouble(dv), 1e-5));
    if (c.mem_q) {
      EXPECT_TRUE(GradClose(dmqi, ToDouble(dmq), 1e-5));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionBackwardTest,
    ::testing::Values(Case{5, 5, 0, true, false},  // plain causal self-attention
                      Case{5, 7, 0, true, false},  // queries are the last 5 of 7 local keys
                      Case{5, 7, 3, true, false},  // memory block before the local keys
                      Case{5, 7, 3, true, false, 13, 19},
                      Case{4, 4, 3, true, true},  // memory scored by separate queries
                      Case{4, 6, 2, true, true, 16, 24},
                      Case{11, 19, 2, true, false},  // queries and keys of one block
                      Case{17, 17, 0, true, false}, Case{3, 6, 2, false, false},  // bidirectional
                      Case{1, 9, 4, true, false},  // one query (decode-shaped)
                      // per-head memory logit bias
                      Case{5, 7, 3, true, false, 5, 7, true},
                      Case{4, 6, 2, true, true, 16, 24, true},
                      Case{11, 19, 2, true, false, 5, 7, true},
                      Case{3, 6, 2, false, false, 5, 7, true},
                      Case{1, 9, 4, true, false, 5, 7, true},
                      Case{5, 5, 0, true, false, 5, 7, true},  // bias without memory: no effect
                      // several 64-key tiles of memory and of local keys, partial last tiles,
                      // several pass-2 key blocks, the causal edge inside a tile; T 40: two
                      // forward / pass-1 query blocks of 32 (dmem_bias summed over them)
                      Case{20, 70, 66, true, false, 5, 7, true},
                      Case{40, 70, 66, true, true, 5, 7, true}, Case{40, 70, 0, false, false}),
    [](const ::testing::TestParamInfo<Case>& param_info) {
      const Case& c = param_info.param;
      return "T" + std::to_string(c.T) + "S" + std::to_string(c.S) + "M" + std::to_string(c.M) +
             (c.causal ? "Causal" : "Full") + (c.mem_q ? "MemQ" : "") + "D" + std::to_string(c.d) +
             "Dv" + std::to_string(c.dv) + (c.bias ? "Bias" : "");
    });

}  // namespace
}  // namespace muninn
