// Rotary position embedding on the CPU, both pair layouts, with linear / NTK-aware / YaRN scaling.
//
// Frequencies, with d = n_rot (the rotated dims; the rest of each head is copied unchanged) and
// pair i in [0, d/2):
//   none:   inv_freq_i = base^(-2i/d), angle = pos * inv_freq_i.
//   linear: angle = (pos / factor) * inv_freq_i (position interpolation).
//   NTK:    base' = base * factor^(d / (d - 2)), then as "none" with base'.
//   YaRN (arXiv 2309.00071, as HF transformers' _compute_yarn_parameters computes it):
//     corr_dim(r) = d * ln(original_ctx / (2 pi r)) / (2 ln base) is the pair index whose
//       wavelength fits r times into the original context;
//     low = max(floor(corr_dim(beta_fast)), 0), high = min(ceil(corr_dim(beta_slow)), d - 1)
//       (high += 0.001 when they are equal);
//     ramp_i = clamp((i - low) / (high - low), 0, 1);
//     inv_freq_i = base^(-2i/d) * ((1 - ramp_i) + ramp_i / factor), i.e. high-frequency pairs
//       (i <= low) keep their frequency, low-frequency pairs (i >= high) are interpolated by
//       factor, with a linear blend in between;
//     mscale = (0.1 ln(factor) + 1) * attn_factor multiplies cos and sin (the rotated dims only).
//
// Angles are computed in double (at position 100000 a float angle would already be off by
// ~0.004 rad), reduced to [-pi, pi] in double, and only then rounded to float for sinf/cosf
// (error <= 1.2e-7 rad, below the float rounding of the result; about twice as fast as double
// sin/cos, which dominate for short heads). One cos/sin table per token serves all its heads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/eltwise_kernels.h"
#include "cpu/eltwise_util.h"

namespace muninn::cpu {
namespace {

struct RopePlan {
  std::vector<double> inv_freq;  // [n_rot / 2] radians per position
  double pos_scale = 1.0;        // positions are multiplied by this (linear scaling)
  double mscale = 1.0;           // magnitude multiplier on cos/sin (YaRN)
};

StatusOr<RopePlan> MakeRopePlan(const RopeParams& p, int64_t n_rot) {
  RopePlan plan;
  const double d = static_cast<double>(n_rot);
  double base = p.freq_base;
  const double factor = p.factor;
  switch (p.scaling) {
    case RopeScaling::kNone:
      break;
    case RopeScaling::kLinear:
      plan.pos_scale = 1.0 / factor;
      break;
    case RopeScaling::kNtk:
      if (n_rot <= 2) {
        return InvalidArgumentError(
            "Rope: NTK-aware scaling needs n_rot > 2 (the exponent is "
            "d / (d - 2)), got n_rot = " +
            std::to_string(n_rot));
      }
      base *= std::pow(factor, d / (d - 2.0));
      break;
    case RopeScaling::kYarn:
      if (!(base > 1.0)) {
        return InvalidArgumentError("Rope: YaRN needs freq_base > 1");
      }
      break;
    default:
      return InvalidArgumentError("Rope: unknown scaling mode " +
                                  std::to_string(static_cast<int>(p.scaling)));
  }
  const int64_t half = n_rot / 2;
  plan.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    plan.inv_freq[static_cast<size_t>(i)] = std::pow(base, -2.0 * static_cast<double>(i) / d);
  }
  if (p.scaling == RopeScaling::kYarn) {
    const auto corr_dim = [&](double rotations) {
      return d * std::log(p.original_ctx / (2.0 * std::numbers::pi * rotations)) /
             (2.0 * std::log(base));
    };
    const double low = std::max(std::floor(corr_dim(p.beta_fast)), 0.0);
    double high = std::min(std::ceil(corr_dim(p.beta_slow)), d - 1.0);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      plan.inv_freq[static_cast<size_t>(i)] *= (1.0 - ramp) + ramp / factor;
    }
    plan.mscale = (0.1 * std::log(factor) + 1.0) * p.attn_factor;
  }
  return plan;
}

Status CheckPositions(const Tensor& pos, int64_t n_tokens) {
  if (!pos.defined()) return InvalidArgumentError("Rope: positions is an undefined tensor");
  if (pos.dtype() != DType::kI32 || !pos.device().is_cpu() || pos.ndim() != 1 ||
      pos.dim(0) != n_tokens) {
    return InvalidArgumentError("Rope: positions must be a host i32 [" + std::to_string(n_tokens) +
                                "], got " + pos.DebugString());
  }
  if (reinterpret_cast<uintptr_t>(pos.data()) % alignof(int32_t) != 0 || pos.stride(0) % 4 != 0) {
    return InvalidArgumentError("Rope: positions are not int32-aligned: " + pos.DebugString());
  }
  return Status::Ok();
}

}  // namespace

Status RopeOp(const CpuContext& ctx, const Tensor& x, const Tensor& positions, const RopeParams& p,
              Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, "Rope", "x"));
  if (x.ndim() != 3) {
    return InvalidArgumentError("Rope: x must be [T, n_head, head_dim], got " +
                                x.shape().ToString());
  }
  RETURN_IF_ERROR(CheckOutput(x, out, "Rope"));
  const int64_t n_tokens = x.dim(0), n_head = x.dim(1), head_dim = x.dim(2);
  RETURN_IF_ERROR(CheckPositions(positions, n_tokens));
  RETURN_IF_ERROR(p.Validate().WithContext("Rope"));
  if (p.layout != RopeLayout::kHalves && p.layout != RopeLayout::kInterleaved) {
    return InvalidArgumentError("Rope: unknown layout " +
                                std::to_string(static_cast<int>(p.layout)));
  }
  const int64_t n_rot = p.n_rot == 0 ? head_dim : p.n_rot;
  if (n_rot > head_dim || n_rot % 2 != 0) {
    return InvalidArgumentError("Rope: n_rot must be even and <= head_dim (" +
                                std::to_string(head_dim) + "), got " + std::to_string(n_rot) +
                                (p.n_rot == 0 ? " (n_rot = 0 means the whole, odd, head)" : ""));
  }
  RETURN_IF_ERROR(CheckAliasing(x, *out, "Rope", "x"));
  RETURN_IF_ERROR(CheckAliasing(positions, *out, "Rope", "positions"));
  ASSIGN_OR_RETURN(const RopePlan plan, MakeRopePlan(p, n_rot));
  if (x.numel() == 0) return Status::Ok();

  const EltwiseKernels& k = EltwiseKernelsFor(ctx.isa);
  const bool interleaved = p.layout == RopeLayout::kInterleaved;
  const int64_t half = n_rot / 2;
  const int64_t x_hs = x.stride(1) / 4, y_hs = out->stride(1) / 4;  // head strides in floats
  const auto* pos_base = static_cast<const char*>(positions.data());
  const int64_t pos_stride = positions.stride(0);
  const auto mscale = static_cast<float>(plan.mscale);
  constexpr double kTwoPi = 2.0 * std::numbers::pi;
  const size_t tail_bytes = static_cast<size_t>(head_dim - n_rot) * sizeof(float);
  ParallelFor(ctx.pool, n_tokens, RowsPerTask(n_head * head_dim), [&](int64_t begin, int64_t end) {
    // [n_rot] each: halves uses the first `half` entries, interleaved all n_rot.
    std::vector<float> cos_t(static_cast<size_t>(n_rot)), sin_t(static_cast<size_t>(n_rot));
    for (int64_t t = begin; t < end; ++t) {
      int32_t pos;
      std::memcpy(&pos, pos_base + t * pos_stride, sizeof(pos));
      const double scaled_pos = static_cast<double>(pos) * plan.pos_scale;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = scaled_pos * plan.inv_freq[static_cast<size_t>(i)];
        const auto reduced =
            static_cast<float>(angle - kTwoPi * std::nearbyint(angle * (1.0 / kTwoPi)));
        const float c = std::cos(reduced) * mscale;
        const float s = std::sin(reduced) * mscale;
        if (interleaved) {
          cos_t[static_cast<size_t>(2 * i)] = c;
          cos_t[static_cast<size_t>(2 * i + 1)] = c;
          sin_t[static_cast<size_t>(2 * i)] = -s;
          sin_t[static_cast<size_t>(2 * i + 1)] = s;
        } else {
          cos_t[static_cast<size_t>(i)] = c;
          sin_t[static_cast<size_t>(i)] = s;
        }
      }
      const float* xt =
          reinterpret_cast<const float*>(static_cast<const char*>(x.data()) + t * x.stride(0));
      float* yt = reinterpret_cast<float*>(static_cast<char*>(out->data()) + t * out->stride(0));
      if (n_rot > 0) {
        if (interleaved) {
          k.rope_interleaved(xt, x_hs, yt, y_hs, n_head, cos_t.data(), sin_t.data(), n_rot);
        } else {
          k.rope_halves(xt, x_hs, yt, y_hs, n_head, cos_t.data(), sin_t.data(), half);
        }
      }
      if (tail_bytes > 0 && xt != yt) {
        for (int64_t h = 0; h < n_head; ++h) {
          std::memcpy(yt + h * y_hs + n_rot, xt + h * x_hs + n_rot, tail_bytes);
        }
      }
    }
  });
  return Status::Ok();
}

}  // namespace muninn::cpu
