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
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace {

constexpr int64_t kRowsPerTask = 4;   // forward: query rows per task
constexpr int64_t kQueryBlock = 8;    // backward pass 1: query rows per task (times G heads)
constexpr int64_t kKeyBlock = 16;     // backward pass 2: key rows per task

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

// Blocks of 8 so that the baseline (SSE2) build vectorises both loops without -O3; an AVX2 /
// AVX-512 variant behind the backend's ISA dispatch is still to do.
void Axpy(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) y[i + j] += a * x[i + j];
  }
  for (; i < n; ++i) y[i] += a * x[i];
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
  float* dmq = mem_q != nullptr ? dmem_q : dq;  // where the memory keys' share of dQ goes

  // D[t, h] = dO · O per query row and head.
  std::vector<float> D(static_cast<size_t>(g.T * g.H));
  ParallelFor(pool, g.T * g.H, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      double s = 0.0;
      for (int64_t i = 0; i < g.dv; ++i) {
        s += static_cast<double>(dout[row * g.dv + i]) * out[row * g.dv + i];
      }
      D[static_cast<size_t>(row)] = static_cast<float>(s);
    }
  });

  // Pass 1: dQ (and dMemQ). A task is a block of kQueryBlock query rows and one kv head: its
  // kQueryBlock · G (row, head) pairs share every key, so each K/V row is loaded once per block.
  const int64_t n_qblocks = (g.T + kQueryBlock - 1) / kQueryBlock;
  DynamicFor(pool, n_qblocks * g.Hkv, [&](int64_t task) {
    const int64_t kvh = task % g.Hkv;
    const int64_t t0 = (task / g.Hkv) * kQueryBlock, t1 = std::min(g.T, t0 + kQueryBlock);
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
        const int64_t row = t * g.H + h;
        std::fill(dq + row * g.d, dq + (row + 1) * g.d, 0.0f);
        if (dmq != dq) std::fill(dmq + row * g.d, dmq + (row + 1) * g.d, 0.0f);
      }
    }
    const auto key = [&](const float* kr, const float* vr, const float* qbase, float* dqbase,
                         int64_t first_t) {
      for (int64_t t = first_t; t < t1; ++t) {
        for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
          const int64_t row = t * g.H + h;
          const float pj = std::exp(g.scale * Dot(qbase + row * g.d, kr, g.d) - lse[row]);
          const float dp = Dot(dout + row * g.dv, vr, g.dv);
          Axpy(g.scale * pj * (dp - D[static_cast<size_t>(row)]), kr, dqbase + row * g.d, g.d);
        }
      }
    };
    for (int64_t j = 0; j < g.M; ++j) {
      key(mem_k + (j * g.Hkv + kvh) * g.d, mem_v + (j * g.Hkv + kvh) * g.dv,
          mem_q != nullptr ? mem_q : q, dmq, t0);
    }
    const int64_t vis = t1 > t0 ? g.Visible(t1 - 1) : 0;
    for (int64_t s = 0; s < vis; ++s) {
      key(k + (s * g.Hkv + kvh) * g.d, v + (s * g.Hkv + kvh) * g.dv, q, dq,
          std::max(t0, g.FirstQuery(s)));
    }
  });

  // Pass 2: dK and dV of the local keys. A task is a block of kKeyBlock key rows and one kv head;
  // it walks every query (row, head) that sees any of its keys, loading each q / dO row once for
  // the whole block, and sums over the queries and the G heads reading that kv head.
  const int64_t n_kblocks = (g.S + kKeyBlock - 1) / kKeyBlock;
  DynamicFor(pool, n_kblocks * g.Hkv, [&](int64_t task) {
    const int64_t kvh = task % g.Hkv;
    const int64_t s0 = (task / g.Hkv) * kKeyBlock, s1 = std::min(g.S, s0 + kKeyBlock);
    for (int64_t s = s0; s < s1; ++s) {
      std::fill(dk + (s * g.Hkv + kvh) * g.d, dk + (s * g.Hkv + kvh + 1) * g.d, 0.0f);
      std::fill(dv + (s * g.Hkv + kvh) * g.dv, dv + (s * g.Hkv + kvh + 1) * g.dv, 0.0f);
    }
    for (int64_t t = g.FirstQuery(s0); t < g.T; ++t) {
      const int64_t s_end = std::min(s1, g.Visible(t));  // keys of the block that t sees
      for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
        const int64_t row = t * g.H + h;
        const float* qr = q + row * g.d;
        const float* dor = dout + row * g.dv;
        const float l = lse[row], Dr = D[static_cast<size_t>(row)];
        for (int64_t s = s0; s < s_end; ++s) {
          const int64_t kr = s * g.Hkv + kvh;
          const float pj = std::exp(g.scale * Dot(qr, k + kr * g.d, g.d) - l);
          Axpy(pj, dor, dv + kr * g.dv, g.dv);
          const float dp = Dot(dor, v + kr * g.dv, g.dv);
          Axpy(g.scale * pj * (dp - Dr), qr, dk + kr * g.d, g.d);
        }
      }
    }
  });
}

}  // namespace muninn
