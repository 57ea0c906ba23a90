// Attention over [memory ; local] keys with one joint softmax and grouped-query heads, computed
// flash-decoding style: a block of kWarps warps takes one (query row t, query head h, key range);
// each warp streams every kWarps-th key of the range, scoring it with a warp reduction and
// folding it into its own online-softmax state (running max m, sum l, unnormalised acc). The
// block merges its warps' states; with several key ranges a second kernel merges the ranges.
// No [T, S] scores exist anywhere. Masking and the memory block follow Backend::Attention and the
// CPU kernel: memory keys are visible to every query and scored with mem_q (plus the per-head
// memory logit bias when given); local key s is visible to query t iff !causal or s <= t + (S - T).
#include "cuda/block_decode.h"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kAttnMaxHeadDim / kWarp;  // head-dim elements per lane

__device__ __forceinline__ float LoadElem(const AttentionOperand& o, const char* row, int64_t i) {
  return o.f16 ? HalfBitsToFloat(reinterpret_cast<const uint16_t*>(row)[i])
               : reinterpret_cast<const float*>(row)[i];
}

__global__ void __launch_bounds__(kWarps * kWarp) AttentionKernel(const AttentionLaunch a) {
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][kAttnMaxHeadDim];
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int64_t t = blockIdx.x / a.n_head, h = blockIdx.x % a.n_head;
  const int64_t split = blockIdx.y;
  const int64_t g = h / (a.n_head / a.n_head_kv);

  // This query's (scaled) local and memory queries, kPerLane elements per lane.
  float q[kPerLane], mq[kPerLane], acc[kPerLane];
  const char* q_row = a.q.data + t * a.q.s0 + h * a.q.s1;
  const char* mq_row = a.mem_q.data + t * a.mem_q.s0 + h * a.mem_q.s1;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t e = lane + i * kWarp;
    q[i] = e < a.d ? reinterpret_cast<const float*>(q_row)[e] * a.scale : 0.0f;
    mq[i] = e < a.d ? reinterpret_cast<const float*>(mq_row)[e] * a.scale : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const float mem_bias = a.has_mem_bias ? a.mem_bias[h] : 0.0f;

  const int64_t visible_local = a.causal ? t + (a.S - a.T) + 1 : a.S;
  const int64_t end_all = a.M + (visible_local < a.S ? visible_local : a.S);
  const int64_t kb = split * a.split_keys;
  const int64_t ke = kb + a.split_keys < end_all ? kb + a.split_keys : end_all;
  for (int64_t j = kb + warp; j < ke; j += kWarps) {
    const bool mem = j < a.M;
    const AttentionOperand& ko = mem ? a.mem_k : a.k;
    const AttentionOperand& vo = mem ? a.mem_v : a.v;
    const int64_t row = mem ? j : j - a.M;
    const char* k_row = ko.data + row * ko.s0 + g * ko.s1;
    const char* v_row = vo.data + row * vo.s0 + g * vo.s1;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t e = lane + i * kWarp;
      if (e < a.d) dot += (mem ? mq[i] : q[i]) * LoadElem(ko, k_row, e);
    }
    const float s = WarpSum(dot) + (mem ? mem_bias : 0.0f);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 for the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t e = lane + i * kWarp;
      if (e < a.dv) acc[i] = acc[i] * corr + p * LoadElem(vo, v_row, e);
    }
    m = m_new;
  }

  // Merge the warps' states.
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t e = lane + i * kWarp;
    if (e < a.dv) s_acc[warp][e] = acc[i];
  }
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) {
    if (s_l[w] > 0.0f) m_all = fmaxf(m_all, s_m[w]);
  }
  float wgt[kWarps];
  float l_all = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wgt[w] = s_l[w] > 0.0f ? expf(s_m[w] - m_all) : 0.0f;
    l_all += wgt[w] * s_l[w];
  }
  if (a.n_split == 1) {
    float* o = reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1);
    const float inv = 1.0f / l_all;
    for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
      float v = 0.0f;
      for (int w = 0; w < kWarps; ++w) v += wgt[w] * s_acc[w][e];
      o[e] = v * inv;
    }
    return;
  }
  float* part = a.partial + ((t * a.n_head + h) * a.n_split + split) * (2 + a.dv);
  if (threadIdx.x == 0) {
    part[0] = m_all;
    part[1] = l_all;
  }
  for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += wgt[w] * s_acc[w][e];
    part[2 + e] = v;
  }
}

// One block per (t, h): combines the n_split range states into out.
__global__ void MergeKernel(const AttentionLaunch a) {
  const int64_t t = blockIdx.x / a.n_head, h = blockIdx.x % a.n_head;
  const int64_t stride = 2 + a.dv;
  const float* parts = a.partial + (t * a.n_head + h) * a.n_split * stride;
  float m_all = -INFINITY;
  for (int64_t s = 0; s < a.n_split; ++s) {
    if (parts[s * stride + 1] > 0.0f) m_all = fmaxf(m_all, parts[s * stride]);
  }
  float l_all = 0.0f;
  for (int64_t s = 0; s < a.n_split; ++s) {
    const float l = parts[s * stride + 1];
    if (l > 0.0f) l_all += expf(parts[s * stride] - m_all) * l;
  }
  const float inv = 1.0f / l_all;
  float* o = reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1);
  for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
    float v = 0.0f;
    for (int64_t s = 0; s < a.n_split; ++s) {
      const float l = parts[s * stride + 1];
      if (l > 0.0f) v += expf(parts[s * stride] - m_all) * parts[s * stride + 2 + e];
    }
    o[e] = v * inv;
  }
}

}  // namespace

int64_t AttentionPartialFloats(int64_t T, int64_t n_head, int64_t n_split, int64_t dv) {
  return n_split > 1 ? T * n_head * n_split * (2 + dv) : 0;
}

cudaError_t LaunchAttention(const AttentionLaunch& args, cudaStream_t stream) {
  const int64_t rows = args.T * args.n_head;
  if (rows > 0x7fffffffLL || args.n_split > 65535 || args.d > kAttnMaxHeadDim ||
      args.dv > kAttnMaxHeadDim) {
    return cudaErrorInvalidConfiguration;
  }
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(args.n_split));
  AttentionKernel<<<grid, kWarps * kWarp, 0, stream>>>(args);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || args.n_split == 1) return e;
  MergeKernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
