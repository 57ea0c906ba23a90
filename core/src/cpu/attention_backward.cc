// Training attention over [memory ; local] (contract in attention_backward.h): argument checks,
// the ISA choice and the parallel loops. The task bodies and the algorithm are in
// attention_backward_kernel.h. Tasks go to threads dynamically (causal rows differ in cost);
// each output row is written by one task in a fixed order.
#include "muninn/core/attention_backward.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/attention_backward_kernel.h"
#include "muninn/core/check.h"
#include "muninn/core/cpu_features.h"
#include "muninn/core/thread_pool.h"

namespace muninn {
namespace cpu::attn_train {
namespace {
struct ScalarTag {};
}  // namespace

Kernels ScalarKernels() {
  return {ForwardTask<ScalarTag>, Pass1Task<ScalarTag>, Pass2Task<ScalarTag>};
}

}  // namespace cpu::attn_train

namespace {

using cpu::attn_train::Args;
using cpu::attn_train::Geometry;
using cpu::attn_train::Kernels;

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

Kernels SelectKernels(CpuIsa isa) {
  MUNINN_CHECK(static_cast<int>(isa) <= static_cast<int>(GetCpuFeatures().BestIsa()))
      << "attention kernels for an instruction set this CPU lacks";
  switch (isa) {
    case CpuIsa::kAvx512:
      return cpu::attn_train::Avx512Kernels();
    case CpuIsa::kAvx2:
      return cpu::attn_train::Avx2Kernels();
    case CpuIsa::kScalar:
      break;
  }
  return cpu::attn_train::ScalarKernels();
}

Geometry MakeGeometry(const AttentionTrainDims& d) {
  MUNINN_CHECK(d.T >= 0 && d.S >= 0 && d.M >= 0 && d.n_head > 0 && d.n_head_kv > 0 && d.d > 0 &&
               d.dv > 0)
      << "attention dims";
  MUNINN_CHECK(d.n_head % d.n_head_kv == 0)
      << "n_head " << d.n_head << " n_head_kv " << d.n_head_kv;
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
  g.scale =
      d.scale != 0.0f ? d.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.d)));
  g.causal = d.causal;
  return g;
}

// The inputs forward and backward share.
Args InputArgs(const float* q, const float* k, const float* v, const float* mem_q,
               const float* mem_k, const float* mem_v) {
  Args a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.mem_q = mem_q;
  a.mem_k = mem_k;
  a.mem_v = mem_v;
  return a;
}

}  // namespace

void AttentionForwardTrain(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                           const float* k, const float* v, const float* mem_q, const float* mem_k,
                           const float* mem_v, float* out, float* lse, const float* mem_bias) {
  const Geometry g = MakeGeometry(dims);
  const Kernels kernels = SelectKernels(dims.isa);
  Args a = InputArgs(q, k, v, mem_q, mem_k, mem_v);
  a.mem_bias = mem_bias;
  a.out = out;
  a.out_lse = lse;
  const int64_t n_qblocks = (g.T + cpu::attn_train::kQueryBlock - 1) / cpu::attn_train::kQueryBlock;
  DynamicFor(pool, n_qblocks * g.Hkv, [&](int64_t task) { kernels.forward(g, a, task); });
}

void AttentionBackward(ThreadPool* pool, const AttentionTrainDims& dims, const float* q,
                       const float* k, const float* v, const float* mem_q, const float* mem_k,
                       const float* mem_v, const float* out, const float* lse, const float* dout,
                       float* dq, float* dk, float* dv, float* dmem_q, const float* mem_bias,
                       float* dmem_bias) {
  const Geometry g = MakeGeometry(dims);
  MUNINN_CHECK(mem_q == nullptr || dmem_q != nullptr) << "mem_q given without dmem_q";
  const Kernels kernels = SelectKernels(dims.isa);

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

  Args a = InputArgs(q, k, v, mem_q, mem_k, mem_v);
  a.lse = lse;
  a.dout = dout;
  a.D = D.data();
  a.dq = dq;
  a.dk = dk;
  a.dv = dv;
  a.dmq = mem_q != nullptr ? dmem_q : dq;
  a.mem_bias = mem_bias;
  const int64_t n_qblocks = (g.T + cpu::attn_train::kQueryBlock - 1) / cpu::attn_train::kQueryBlock;
  // dmem_bias: each pass-1 task leaves its block's sums, added here in block order.
  std::vector<float> db_part;
  if (dmem_bias != nullptr && g.M > 0) {
    db_part.assign(static_cast<size_t>(n_qblocks * g.H), 0.0f);
    a.db_part = db_part.data();
  }
  DynamicFor(pool, n_qblocks * g.Hkv, [&](int64_t task) { kernels.pass1(g, a, task); });
  if (a.db_part != nullptr) {
    for (int64_t h = 0; h < g.H; ++h) {
      double s = 0.0;
      for (int64_t b = 0; b < n_qblocks; ++b) s += db_part[static_cast<size_t>(b * g.H + h)];
      dmem_bias[h] += static_cast<float>(s);
    }
  }
  const int64_t n_kblocks = (g.S + cpu::attn_train::kKeyBlock - 1) / cpu::attn_train::kKeyBlock;
  DynamicFor(pool, n_kblocks * g.Hkv, [&](int64_t task) { kernels.pass2(g, a, task); });
}

}  // namespace muninn
