// Rotary position embedding, both pair layouts; the frequency plan (scaling modes) is computed on
// the host in double exactly as the CPU backend's (core/src/cpu/rope.cc) and passed by value.
// Angles are formed and reduced to [-pi, pi] in double, then rounded to float for sinf/cosf.
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RopeKernel(const RopeLaunch a) {
  const int64_t half = a.n_rot / 2;
  const int64_t per_head = half + (a.head_dim - a.n_rot);  // rotated pairs, then copied dims
  const int64_t n = a.n_tokens * a.n_head * per_head;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = idx % per_head;
    const int64_t h = (idx / per_head) % a.n_head;
    const int64_t t = idx / (per_head * a.n_head);
    const float* xh = reinterpret_cast<const float*>(a.x + t * a.x_s0 + h * a.x_s1);
    float* yh = reinterpret_cast<float*>(a.y + t * a.y_s0 + h * a.y_s1);
    if (k >= half) {
      const int64_t e = a.n_rot + (k - half);
      yh[e] = xh[e];
      continue;
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
    if (a.interleaved) {
      const float x0 = xh[2 * k], x1 = xh[2 * k + 1];
      yh[2 * k] = x0 * c - x1 * s;
      yh[2 * k + 1] = x1 * c + x0 * s;
    } else {
      const float x0 = xh[k], x1 = xh[k + half];
      yh[k] = x0 * c - x1 * s;
      yh[k + half] = x1 * c + x0 * s;
    }
  }
}

}  // namespace

cudaError_t LaunchRope(const RopeLaunch& args, cudaStream_t stream) {
  const int64_t per_head = args.n_rot / 2 + (args.head_dim - args.n_rot);
  const int64_t n = args.n_tokens * args.n_head * per_head;
  RopeKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
