// Rotary position embedding, both pair layouts; the frequency plan (scaling modes) is computed on
// the host in double exactly as the CPU backend's (core/src/cpu/rope.cc) and passed by value.
// Angles are formed and reduced to [-pi, pi] in double, then rounded to float for sinf/cosf.
#include <cuda_fp16.h>

#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

// The elements that item k of a head covers: for k < n_rot / 2 the rotated pair (e0, e1) of the
// layout, for the others one copied dim (e0 = e1).
__device__ __forceinline__ void ItemElements(const RopeLaunch& a, int64_t k, int64_t* e0,
                                             int64_t* e1) {
  const int64_t half = a.n_rot / 2;
  if (k >= half) {
    *e0 = *e1 = a.n_rot + (k - half);
  } else if (a.interleaved) {
    *e0 = 2 * k;
    *e1 = 2 * k + 1;
  } else {
    *e0 = k;
    *e1 = k + half;
  }
}

// Item k of one head at token t: (y[e0], y[e1]) = the pair (x[e0], x[e1]) rotated, or y[e0] =
// x[e0] for a copied dim; returns the two values written.
__device__ __forceinline__ float2 RopeItem(const RopeLaunch& a, int64_t t, int64_t k,
                                           const float* xh, float* yh) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  int64_t e0, e1;
  ItemElements(a, k, &e0, &e1);
  if (e0 == e1) {
    const float v = xh[e0];
    yh[e0] = v;
    return make_float2(v, v);
  }
  const int32_t pos = *reinterpret_cast<const int32_t*>(a.positions + t * a.pos_stride);
  // Negated in double: exact for every int32, INT32_MIN included.
  const double pos_d = a.negate_positions ? -static_cast<double>(pos) : static_cast<double>(pos);
  const double angle = pos_d * a.pos_scale * a.inv_freq[k];
  const float reduced = static_cast<float>(angle - kTwoPi * rint(angle * (1.0 / kTwoPi)));
  float s, c;
  sincosf(reduced, &s, &c);
  c *= a.mscale;
  s *= a.mscale;
  const float x0 = xh[e0], x1 = xh[e1];
  const float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
  yh[e0] = y0;
  yh[e1] = y1;
  return make_float2(y0, y1);
}

__global__ void RopeKernel(const RopeLaunch a) {
  const int64_t per_head = a.n_rot / 2 + (a.head_dim - a.n_rot);  // rotated pairs, copied dims
  const int64_t n = a.n_tokens * a.n_head * per_head;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = idx % per_head;
    const int64_t h = (idx / per_head) % a.n_head;
    const int64_t t = idx / (per_head * a.n_head);
    RopeItem(a, t, k, reinterpret_cast<const float*>(a.x + t * a.x_s0 + h * a.x_s1),
             reinterpret_cast<float*>(a.y + t * a.y_s0 + h * a.y_s1));
  }
}

// One element into a cache row (f16 rounded to nearest, as the Copy kernel converts).
__device__ __forceinline__ void StoreCache(char* row, int64_t e, float v, bool f16) {
  if (f16) {
    reinterpret_cast<__half*>(row)[e] = __float2half_rn(v);
  } else {
    reinterpret_cast<float*>(row)[e] = v;
  }
}

// Heads [0, n_head) of each token are q's, then n_kv of k, then n_kv of v; each item as RopeKernel
// splits a head.
__global__ void RopeStoreKernel(const RopeStoreLaunch s) {
  const RopeLaunch& a = s.rope;
  const int64_t per_head = a.n_rot / 2 + (a.head_dim - a.n_rot);
  const int64_t heads = a.n_head + 2 * s.n_kv;
  const int64_t n = a.n_tokens * heads * per_head;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = idx % per_head;
    const int64_t h = (idx / per_head) % heads;
    const int64_t t = idx / (per_head * heads);
    if (h < a.n_head) {
      RopeItem(a, t, k, reinterpret_cast<const float*>(a.x + t * a.x_s0 + h * a.x_s1),
               reinterpret_cast<float*>(a.y + t * a.y_s0 + h * a.y_s1));
      continue;
    }
    int64_t e0, e1;
    ItemElements(a, k, &e0, &e1);
    if (h < a.n_head + s.n_kv) {
      const int64_t hk = h - a.n_head;
      float* kh = reinterpret_cast<float*>(s.k + t * s.k_s0 + hk * s.k_s1);
      const float2 y = RopeItem(a, t, k, kh, kh);
      char* row = s.kc + t * s.kc_s0 + hk * s.kc_s1;
      StoreCache(row, e0, y.x, s.cache_f16);
      if (e1 != e0) StoreCache(row, e1, y.y, s.cache_f16);
    } else {
      const int64_t hv = h - a.n_head - s.n_kv;
      const float* vh = reinterpret_cast<const float*>(s.v + t * s.v_s0 + hv * s.v_s1);
      char* row = s.vc + t * s.vc_s0 + hv * s.vc_s1;
      StoreCache(row, e0, vh[e0], s.cache_f16);
      if (e1 != e0) StoreCache(row, e1, vh[e1], s.cache_f16);
    }
  }
}

}  // namespace

cudaError_t LaunchRopeStore(const RopeStoreLaunch& args, cudaStream_t stream) {
  const RopeLaunch& a = args.rope;
  const int64_t per_head = a.n_rot / 2 + (a.head_dim - a.n_rot);
  const int64_t n = a.n_tokens * (a.n_head + 2 * args.n_kv) * per_head;
  RopeStoreKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchRope(const RopeLaunch& args, cudaStream_t stream) {
  const int64_t per_head = args.n_rot / 2 + (args.head_dim - args.n_rot);
  const int64_t n = args.n_tokens * args.n_head * per_head;
  RopeKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
