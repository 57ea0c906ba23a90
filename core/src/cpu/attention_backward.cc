// Training attention over [memory ; local] (contract in attention_backward.h).
//
// Forward: per query row and head, the scores of the memory keys and of the visible local keys go
// through one softmax; the row's log-sum-exp is saved. Backward (FlashAttention-2's two loops,
// without tiling): with P = exp(S - lse) recomputed from the saved lse, dP = dO · Vᵀ,
// D = rowsum(dO ∘ O) and dS = P ∘ (dP - D),
//   pass 1, over query rows:     dQ = scale · dS · K   (dMemQ = scale · dS_mem · K_mem)
//   pass 2, over local key rows: dV = Pᵀ · dO,  dK = scale · dSᵀ · Q   (summed over the group)
// Each pass recomputes the scores it needs, so nothing of size [T, S] is stored; each output row
// is owned by one task, so no atomics and no thread-count-dependent sums. Rows go to threads
// dynamically because causal rows differ in cost.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "muninn/core/attention_backward.h"
#include "muninn/core/check.h"

namespace muninn {
namespace {

constexpr int64_t kRowsPerTask = 4;

float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Runs fn(item) for every item in [0, n), items handed out one at a time to the pool's threads.
void DynamicFor(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  pool->RunOnAll([&](int, int) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  });
}

struct Geometry {
  int64_t T, S, M, H, Hkv, G, d, dv, offset;  // offset = S - T (causal alignment)
  float scale;
  bool causal;
  // Local keys visible to query t: [0, Visible(t)).
  int64_t Visible(int64_t t) const { return causal ? std::min(S, t + offset + 1) : S; }
  // First query that sees local key s.
  int64_t FirstQuery(int64_t s) const { return causal ? std::max<int64_t>(0, s - offset) : 0; }
};

Geometry MakeGeometry(const AttentionTrainDims& d) {
  MUNINN_CHECK(d.T >= 0 && d.S >= 0 && d.M >= 0 && d.n_head > 0 && d.n_head_kv > 0 && d.d > 0 &&
               d.dv > 0)
      << "attention dims";
  MUNINN_CHECK(d.n_head % d.n_head_kv == 0) << "n_head " << d.n_head << " n_head_kv "
                                            << d.n_head_kv;
  MUNINN_CHECK(!d.causal || d.T <= d.S) << "causal attention needs T <= S";
  MUNINN_CHECK(d.T == 0 || d.S + d.M > 0) << "no keys";
  Geometry g;
  g.T = d.T;
  g.S = d.S;
  g.M = d.M;
  g.H = d.n_head;
  g.Hkv = d.n_head_kv;
  g.G = d.n_head / d.n_head_kv;
  g.d = d.d;
  g.dv = d.dv;
  g.offset = d.S - d.T;
  g.scale = d.scale != 0.0f ? d.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.d)));
  g.causal = d.causal;
  return g;
}

}  // namespace

void AttentionForwardTrain(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                           const float* k, const float* v, const float* mem_q, const float* mem_k,
                           const float* mem_v, float* out, float* lse) {
  const Geometry g = MakeGeometry(dims);
  const int64_t n_tasks = (g.T + kRowsPerTask - 1) / kRowsPerTask;
  DynamicFor(pool, n_tasks, [&](int64_t task) {
    std::vector<float> p(static_cast<size_t>(g.M + g.S));
    std::vector<float> acc(static_cast<size_t>(g.dv));
    const int64_t t_end = std::min(g.T, (task + 1) * kRowsPerTask);
    for (int64_t t = task * kRowsPerTask; t < t_end; ++t) {
      const int64_t vis = g.Visible(t);
      for (int64_t h = 0; h < g.H; ++h) {
        const int64_t kvh = h / g.G;
        const float* qr = q + (t * g.H + h) * g.d;
        const float* mqr = mem_q != nullptr ? mem_q + (t * g.H + h) * g.d : qr;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < g.M; ++j) {
          p[static_cast<size_t>(j)] = g.scale * Dot(mqr, mem_k + (j * g.Hkv + kvh) * g.d, g.d);
          mx = std::max(mx, p[static_cast<size_t>(j)]);
        }
        for (int64_t s = 0; s < vis; ++s) {
          p[static_cast<size_t>(g.M + s)] = g.scale * Dot(qr, k + (s * g.Hkv + kvh) * g.d, g.d);
          mx = std::max(mx, p[static_cast<size_t>(g.M + s)]);
        }
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < g.M + vis; ++j) {
          const float e = std::exp(p[static_cast<size_t>(j)] - mx);
          sum += e;
          const float* vr = j < g.M ? mem_v + (j * g.Hkv + kvh) * g.dv
                                    : v + ((j - g.M) * g.Hkv + kvh) * g.dv;
          Axpy(e, vr, acc.data(), g.dv);
        }
        const auto inv = static_cast<float>(1.0 / sum);
        float* orow = out + (t * g.H + h) * g.dv;
        for (int64_t i = 0; i < g.dv; ++i) orow[i] = acc[static_cast<size_t>(i)] * inv;
        lse[t * g.H + h] = mx + static_cast<float>(std::log(sum));
      }
    }
  });
}

void AttentionBackward(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                       const float* k, const float* v, const float* mem_q, const float* mem_k,
                       const float* mem_v, const float* out, const float* lse, const float* dout,
                       float* dq, float* dk, float* dv, float* dmem_q) {
  const Geometry g = MakeGeometry(dims);
  MUNINN_CHECK(mem_q == nullptr || dmem_q != nullptr) << "mem_q given without dmem_q";
  // D[t, h] = dO · O per query row and head.
  std::vector<float> D(static_cast<size_t>(g.T * g.H));
  const int64_t n_qtasks = (g.T + kRowsPerTask - 1) / kRowsPerTask;

  // Pass 1: D, dQ (and dMemQ), one task per block of query rows.
  DynamicFor(pool, n_qtasks, [&](int64_t task) {
    const int64_t t_end = std::min(g.T, (task + 1) * kRowsPerTask);
    for (int64_t t = task * kRowsPerTask; t < t_end; ++t) {
      const int64_t vis = g.Visible(t);
      for (int64_t h = 0; h < g.H; ++h) {
        const int64_t row = t * g.H + h, kvh = h / g.G;
        const float* qr = q + row * g.d;
        const float* mqr = mem_q != nullptr ? mem_q + row * g.d : qr;
        const float* dor = dout + row * g.dv;
        double dsum = 0.0;
        for (int64_t i = 0; i < g.dv; ++i) dsum += static_cast<double>(dor[i]) * out[row * g.dv + i];
        const auto Dr = static_cast<float>(dsum);
        D[static_cast<size_t>(row)] = Dr;
        const float l = lse[row];
        float* dqr = dq + row * g.d;
        float* dmqr = dmem_q != nullptr && mem_q != nullptr ? dmem_q + row * g.d : dqr;
        std::fill(dqr, dqr + g.d, 0.0f);
        if (dmqr != dqr) std::fill(dmqr, dmqr + g.d, 0.0f);
        for (int64_t j = 0; j < g.M; ++j) {
          const float* kr = mem_k + (j * g.Hkv + kvh) * g.d;
          const float pj = std::exp(g.scale * Dot(mqr, kr, g.d) - l);
          const float dp = Dot(dor, mem_v + (j * g.Hkv + kvh) * g.dv, g.dv);
          Axpy(g.scale * pj * (dp - Dr), kr, dmqr, g.d);
        }
        for (int64_t s = 0; s < vis; ++s) {
          const float* kr = k + (s * g.Hkv + kvh) * g.d;
          const float pj = std::exp(g.scale * Dot(qr, kr, g.d) - l);
          const float dp = Dot(dor, v + (s * g.Hkv + kvh) * g.dv, g.dv);
          Axpy(g.scale * pj * (dp - Dr), kr, dqr, g.d);
        }
      }
    }
  });

  // Pass 2: dK and dV of the local keys, one task per block of key rows; each (key, kv head) sums
  // over the queries that see it and the G query heads that read its kv head.
  const int64_t n_ktasks = (g.S + kRowsPerTask - 1) / kRowsPerTask;
  DynamicFor(pool, n_ktasks, [&](int64_t task) {
    const int64_t s_end = std::min(g.S, (task + 1) * kRowsPerTask);
    for (int64_t s = task * kRowsPerTask; s < s_end; ++s) {
      for (int64_t kvh = 0; kvh < g.Hkv; ++kvh) {
        const float* kr = k + (s * g.Hkv + kvh) * g.d;
        const float* vr = v + (s * g.Hkv + kvh) * g.dv;
        float* dkr = dk + (s * g.Hkv + kvh) * g.d;
        float* dvr = dv + (s * g.Hkv + kvh) * g.dv;
        std::fill(dkr, dkr + g.d, 0.0f);
        std::fill(dvr, dvr + g.dv, 0.0f);
        for (int64_t t = g.FirstQuery(s); t < g.T; ++t) {
          for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
            const int64_t row = t * g.H + h;
            const float* qr = q + row * g.d;
            const float* dor = dout + row * g.dv;
            const float pj = std::exp(g.scale * Dot(qr, kr, g.d) - lse[row]);
            Axpy(pj, dor, dvr, g.dv);
            const float dp = Dot(dor, vr, g.dv);
            Axpy(g.scale * pj * (dp - D[static_cast<size_t>(row)]), qr, dkr, g.d);
          }
        }
      }
    }
  });
}

}  // namespace muninn
