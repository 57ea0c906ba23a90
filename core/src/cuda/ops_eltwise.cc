// The CUDA backend's row-wise f32 ops: Silu, Gelu, Scale, Add, Mul, SwiGlu, RmsNorm, LayerNorm,
// Softmax and Rope. Argument rules are the CPU backend's (core/src/cpu/{unary,binary,norm,
// softmax,rope}.cc) with device tensors.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>
#include <utility>

#include "cuda/cuda_checks.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_status.h"
#include "cuda/kernels.h"

namespace muninn::cuda {
namespace {

Status RunUnary(const CudaContext& ctx, const Tensor& x, Tensor* out, std::string_view op,
                UnaryKind kind, float s) {
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, op, "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, ctx.device, op));
  RETURN_IF_ERROR(CheckAliasing(x, *out, op, "x"));
  if (x.numel() == 0) return Status::Ok();
  return CudaStatus(LaunchUnary(kind, static_cast<const char*>(x.data()), LayoutOf(x),
                                static_cast<char*>(out->data()), LayoutOf(*out), x.num_rows(),
                                x.dim(-1), s, ctx.stream),
                    std::string(op) + " kernel");
}

Status RunBinary(const CudaContext& ctx, const Tensor& a, const Tensor& b, Tensor* out,
                 std::string_view op, BinaryKind kind, bool allow_broadcast) {
  RETURN_IF_ERROR(CheckF32Rows(a, ctx.device, op, "a"));
  RETURN_IF_ERROR(CheckF32Rows(b, ctx.device, op, "b"));
  RETURN_IF_ERROR(CheckOutput(a, out, ctx.device, op));
  bool broadcast = false;
  if (b.shape() == a.shape()) {
    broadcast = false;
  } else if (allow_broadcast && b.num_rows() == 1 && b.dim(-1) == a.dim(-1) &&
             b.ndim() <= a.ndim()) {
    broadcast = true;
  } else {
    return InvalidArgumentError(std::string(op) + ": b must have a's shape " +
                                a.shape().ToString() +
                                (allow_broadcast ? " or be one row [" + std::to_string(a.dim(-1)) + "]"
                                                 : std::string()) +
                                ", got " + b.shape().ToString());
  }
  RETURN_IF_ERROR(CheckAliasing(a, *out, op, "a"));
  RETURN_IF_ERROR(CheckAliasing(b, *out, op, "b"));
  if (a.numel() == 0) return Status::Ok();
  return CudaStatus(LaunchBinary(kind, static_cast<const char*>(a.data()), LayoutOf(a),
                                 static_cast<const char*>(b.data()), LayoutOf(b), broadcast,
                                 static_cast<char*>(out->data()), LayoutOf(*out), a.num_rows(),
                                 a.dim(-1), ctx.stream),
                    std::string(op) + " kernel");
}

}  // namespace

Status SiluOp(const CudaContext& ctx, const Tensor& x, Tensor* out) {
  return RunUnary(ctx, x, out, "Silu", UnaryKind::kSilu, 0.0f);
}

Status GeluOp(const CudaContext& ctx, const Tensor& x, GeluMode mode, Tensor* out) {
  if (mode != GeluMode::kErf && mode != GeluMode::kTanh) {
    return InvalidArgumentError("Gelu: unknown mode " + std::to_string(static_cast<int>(mode)));
  }
  return RunUnary(ctx, x, out, "Gelu",
                  mode == GeluMode::kErf ? UnaryKind::kGeluErf : UnaryKind::kGeluTanh, 0.0f);
}

Status ScaleOp(const CudaContext& ctx, const Tensor& x, float s, Tensor* out) {
  return RunUnary(ctx, x, out, "Scale", UnaryKind::kScale, s);
}

Status AddOp(const CudaContext& ctx, const Tensor& a, const Tensor& b, Tensor* out) {
  return RunBinary(ctx, a, b, out, "Add", BinaryKind::kAdd, true);
}

Status MulOp(const CudaContext& ctx, const Tensor& a, const Tensor& b, Tensor* out) {
  return RunBinary(ctx, a, b, out, "Mul", BinaryKind::kMul, true);
}

Status SwiGluOp(const CudaContext& ctx, const Tensor& gate, const Tensor& up, Tensor* out) {
  return RunBinary(ctx, gate, up, out, "SwiGlu", BinaryKind::kSwiGlu, false);
}

Status RmsNormOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, float eps, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, "RmsNorm", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, ctx.device, "RmsNorm"));
  RETURN_IF_ERROR(CheckOptionalVector(w, x.dim(-1), ctx.device, "RmsNorm", "weight"));
  RETURN_IF_ERROR(CheckEps(eps, "RmsNorm"));
  RETURN_IF_ERROR(CheckAliasing(x, *out, "RmsNorm", "x"));
  if (w.defined()) RETURN_IF_ERROR(CheckAliasing(w, *out, "RmsNorm", "weight"));
  if (x.numel() == 0) return Status::Ok();
  return CudaStatus(
      LaunchRmsNorm(static_cast<const char*>(x.data()), LayoutOf(x),
                    w.defined() ? w.data_as<const float>() : nullptr, eps,
                    static_cast<char*>(out->data()), LayoutOf(*out), x.num_rows(), x.dim(-1),
                    ctx.stream),
      "RmsNorm kernel");
}

Status LayerNormOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                   float eps, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, "LayerNorm", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, ctx.device, "LayerNorm"));
  RETURN_IF_ERROR(CheckOptionalVector(w, x.dim(-1), ctx.device, "LayerNorm", "weight"));
  RETURN_IF_ERROR(CheckOptionalVector(b, x.dim(-1), ctx.device, "LayerNorm", "bias"));
  RETURN_IF_ERROR(CheckEps(eps, "LayerNorm"));
  RETURN_IF_ERROR(CheckAliasing(x, *out, "LayerNorm", "x"));
  if (w.defined()) RETURN_IF_ERROR(CheckAliasing(w, *out, "LayerNorm", "weight"));
  if (b.defined()) RETURN_IF_ERROR(CheckAliasing(b, *out, "LayerNorm", "bias"));
  if (x.numel() == 0) return Status::Ok();
  return CudaStatus(
      LaunchLayerNorm(static_cast<const char*>(x.data()), LayoutOf(x),
                      w.defined() ? w.data_as<const float>() : nullptr,
                      b.defined() ? b.data_as<const float>() : nullptr, eps,
                      static_cast<char*>(out->data()), LayoutOf(*out), x.num_rows(), x.dim(-1),
                      ctx.stream),
      "LayerNorm kernel");
}

Status SoftmaxOp(const CudaContext& ctx, const Tensor& x, float scale, Tensor* out) {
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, "Softmax", "x"));
  RETURN_IF_ERROR(CheckOutput(x, out, ctx.device, "Softmax"));
  if (!std::isfinite(scale)) {
    return InvalidArgumentError("Softmax: scale must be finite, got " + std::to_string(scale));
  }
  RETURN_IF_ERROR(CheckAliasing(x, *out, "Softmax", "x"));
  if (x.numel() == 0) return Status::Ok();
  return CudaStatus(LaunchSoftmax(static_cast<const char*>(x.data()), LayoutOf(x), scale,
                                  static_cast<char*>(out->data()), LayoutOf(*out), x.num_rows(),
                                  x.dim(-1), ctx.stream),
                    "Softmax kernel");
}

// The frequency plan is the CPU backend's (core/src/cpu/rope.cc MakeRopePlan), in double.
namespace {

// Rope's launch for x -> out (frequency plan, positions on the device) and the device positions
// it reads: a copy of host positions, which must outlive the launch.
struct RopePlan {
  RopeLaunch launch;
  Tensor positions;
};

// Rope's checks and its plan.
StatusOr<RopePlan> PlanRope(const CudaContext& ctx, const Tensor& x, const Tensor& positions,
                            const RopeParams& p, Tensor* out, bool negate_positions) {
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, "Rope", "x"));
  if (x.ndim() != 3) {
    return InvalidArgumentError("Rope: x must be [T, n_head, head_dim], got " +
                                x.shape().ToString());
  }
  RETURN_IF_ERROR(CheckOutput(x, out, ctx.device, "Rope"));
  const int64_t n_tokens = x.dim(0), n_head = x.dim(1), head_dim = x.dim(2);
  if (!positions.defined() || positions.dtype() != DType::kI32 || positions.ndim() != 1 ||
      positions.dim(0) != n_tokens) {
    return InvalidArgumentError("Rope: positions must be i32 [" + std::to_string(n_tokens) +
                                "] (host or device), got " +
                                (positions.defined() ? positions.DebugString() : "undefined"));
  }
  RETURN_IF_ERROR(p.Validate().WithContext("Rope"));
  if (p.layout != RopeLayout::kHalves && p.layout != RopeLayout::kInterleaved) {
    return InvalidArgumentError("Rope: unknown layout " +
                                std::to_string(static_cast<int>(p.layout)));
  }
  const int64_t n_rot = p.n_rot == 0 ? head_dim : p.n_rot;
  if (n_rot > head_dim || n_rot % 2 != 0) {
    return InvalidArgumentError("Rope: n_rot must be even and <= head_dim (" +
                                std::to_string(head_dim) + "), got " + std::to_string(n_rot));
  }
  if (n_rot / 2 > kMaxRopePairs) {
    return InvalidArgumentError("Rope: the CUDA backend rotates at most " +
                                std::to_string(2 * kMaxRopePairs) + " dims per head, got n_rot " +
                                std::to_string(n_rot));
  }
  RETURN_IF_ERROR(CheckAliasing(x, *out, "Rope", "x"));
  if (positions.device() == out->device() && Overlaps(positions, *out)) {
    return InvalidArgumentError("Rope: out must not overlap positions");
  }

  RopeLaunch a;
  const double d = static_cast<double>(n_rot);
  double base = p.freq_base;
  const double factor = p.factor;
  switch (p.scaling) {
    case RopeScaling::kNone:
      break;
    case RopeScaling::kLinear:
      a.pos_scale = 1.0 / factor;
      break;
    case RopeScaling::kNtk:
      if (n_rot <= 2) {
        return InvalidArgumentError("Rope: NTK-aware scaling needs n_rot > 2, got n_rot = " +
                                    std::to_string(n_rot));
      }
      base *= std::pow(factor, d / (d - 2.0));
      break;
    case RopeScaling::kYarn:
      if (!(base > 1.0)) return InvalidArgumentError("Rope: YaRN needs freq_base > 1");
      break;
    default:
      return InvalidArgumentError("Rope: unknown scaling mode " +
                                  std::to_string(static_cast<int>(p.scaling)));
  }
  const int64_t half = n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    a.inv_freq[i] = std::pow(base, -2.0 * static_cast<double>(i) / d);
  }
  double mscale = 1.0;
  if (p.scaling == RopeScaling::kYarn) {
    constexpr double kPi = 3.14159265358979323846;
    const auto corr_dim = [&](double rotations) {
      return d * std::log(p.original_ctx / (2.0 * kPi * rotations)) / (2.0 * std::log(base));
    };
    const double low = std::max(std::floor(corr_dim(p.beta_fast)), 0.0);
    double high = std::min(std::ceil(corr_dim(p.beta_slow)), d - 1.0);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      a.inv_freq[i] *= (1.0 - ramp) + ramp / factor;
    }
    mscale = (0.1 * std::log(factor) + 1.0) * p.attn_factor;
  }
  a.n_tokens = n_tokens;
  if (x.numel() == 0) return RopePlan{a, Tensor()};
  ASSIGN_OR_RETURN(Tensor pos, IndexOnDevice(ctx, positions, "Rope", "positions"));
  a.x = static_cast<const char*>(x.data());
  a.x_s0 = x.stride(0);
  a.x_s1 = x.stride(1);
  a.y = static_cast<char*>(out->data());
  a.y_s0 = out->stride(0);
  a.y_s1 = out->stride(1);
  a.positions = static_cast<const char*>(pos.data());
  a.pos_stride = pos.stride(0);
  a.n_tokens = n_tokens;
  a.n_head = n_head;
  a.head_dim = head_dim;
  a.n_rot = n_rot;
  a.interleaved = p.layout == RopeLayout::kInterleaved;
  a.mscale = static_cast<float>(mscale);
  a.negate_positions = negate_positions;
  return RopePlan{a, std::move(pos)};
}

}  // namespace

Status RopeOp(const CudaContext& ctx, const Tensor& x, const Tensor& positions, const RopeParams& p,
              Tensor* out, bool negate_positions) {
  ASSIGN_OR_RETURN(const RopePlan plan, PlanRope(ctx, x, positions, p, out, negate_positions));
  if (x.numel() == 0) return Status::Ok();
  return CudaStatus(LaunchRope(plan.launch, ctx.stream), "Rope kernel");
}

// One launch when every operand is as the model's decode step has them: q, k, v f32 [T, heads,
// head_dim] with packed heads, an f16 or f32 cache of k's and v's shapes, positions on the device;
// anything else runs the four plain ops.
Status RopeAndStoreKvOp(const CudaContext& ctx, const Tensor& positions, const RopeParams& p,
                        Tensor* q, Tensor* k, const Tensor& v, Tensor* k_cache, Tensor* v_cache) {
  if (q == nullptr || k == nullptr || k_cache == nullptr || v_cache == nullptr) {
    return InvalidArgumentError("RopeAndStoreKv: q, k, k_cache and v_cache must not be null");
  }
  const auto plain = [&]() -> Status {
    RETURN_IF_ERROR(RopeOp(ctx, *q, positions, p, q));
    RETURN_IF_ERROR(RopeOp(ctx, *k, positions, p, k));
    RETURN_IF_ERROR(CopyOp(ctx, *k, k_cache));
    return CopyOp(ctx, v, v_cache);
  };
  const auto cache_ok = [&](const Tensor& c, const Tensor& like) {
    if (!c.defined() || (c.dtype() != DType::kF16 && c.dtype() != DType::kF32)) return false;
    const int64_t elem = c.dtype() == DType::kF16 ? 2 : 4;
    return c.device() == Device::Cuda(ctx.device) && c.shape() == like.shape() && c.ndim() == 3 &&
           c.stride(2) == elem && c.stride(1) >= c.dim(2) * elem &&
           RowsAligned(c, static_cast<size_t>(elem));
  };
  const bool fits =
      q->defined() && k->defined() && v.defined() && q->ndim() == 3 && k->ndim() == 3 &&
      v.shape() == k->shape() && q->dim(0) == k->dim(0) && q->dim(2) == k->dim(2) &&
      positions.defined() && positions.device() == Device::Cuda(ctx.device) &&
      CheckF32Rows(v, ctx.device, "RopeAndStoreKv", "v").ok() && cache_ok(*k_cache, *k) &&
      cache_ok(*v_cache, v) && k_cache->dtype() == v_cache->dtype() && q->stride(2) == 4 &&
      k->stride(2) == 4 && v.stride(2) == 4 && q->stride(1) >= 4 * q->dim(2) &&
      k->stride(1) >= 4 * k->dim(2) && v.stride(1) >= 4 * v.dim(2);
  if (!fits || q->numel() == 0 || k->numel() == 0) return plain();
  // q's plan checks q and the rotation as Rope does (in place, as the plain ops run) and serves k
  // too, whose T and head_dim `fits` matched to q's (positions on the device: the plan holds no
  // copy of them).
  ASSIGN_OR_RETURN(const RopePlan plan, PlanRope(ctx, *q, positions, p, q, false));
  RETURN_IF_ERROR(CheckF32Rows(*k, ctx.device, "RopeAndStoreKv", "k"));
  const Tensor* const all[] = {q, k, &v, k_cache, v_cache, &positions};
  for (size_t i = 0; i < std::size(all); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (Overlaps(*all[i], *all[j])) {
        return InvalidArgumentError(
            "RopeAndStoreKv: q, k, v, the caches and the positions must not overlap");
      }
    }
  }
  RopeStoreLaunch s;
  s.rope = plan.launch;
  s.k = static_cast<char*>(k->data());
  s.k_s0 = k->stride(0);
  s.k_s1 = k->stride(1);
  s.n_kv = k->dim(1);
  s.v = static_cast<const char*>(v.data());
  s.v_s0 = v.stride(0);
  s.v_s1 = v.stride(1);
  s.kc = static_cast<char*>(k_cache->data());
  s.kc_s0 = k_cache->stride(0);
  s.kc_s1 = k_cache->stride(1);
  s.vc = static_cast<char*>(v_cache->data());
  s.vc_s0 = v_cache->stride(0);
  s.vc_s1 = v_cache->stride(1);
  s.cache_f16 = k_cache->dtype() == DType::kF16;
  return CudaStatus(LaunchRopeStore(s, ctx.stream), "RopeAndStoreKv kernel");
}

}  // namespace muninn::cuda
