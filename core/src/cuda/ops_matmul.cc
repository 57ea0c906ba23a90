// MatMul on the CUDA backend (out[M, N] = x[M, K] · w[N, K]ᵀ, the convention of backend.h):
//  - M <= kMatVecMaxRows (decode): matvec.cu on the weight's blocks as stored, f32 activations;
//  - larger M (prefill): w is decoded to f16 (bf16 for bf16 weights) — whole and once, kept in the
//    backend's DecodedWeightCache while its budget lasts, else in tiles of rows per call — x is
//    rounded to the same type, and cuBLAS multiplies with f32 accumulation and f32 output;
//    f32 weights use cublasSgemm (full f32, no TF32).
#include <algorithm>
#include <climits>
#include <optional>
#include <span>
#include <string>

#include "cuda/block_decode.h"
#include "cuda/cuda_checks.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_status.h"
#include "cuda/kernels.h"

namespace muninn::cuda {
namespace {

// Bytes of decoded weight rows one GEMM tile may use.
constexpr int64_t kDecodeTileBytes = int64_t{64} << 20;

size_t RowAlignment(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

Status Validate(const CudaContext& ctx, const Tensor& x, const Tensor& w, const Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("MatMul: out is null");
  RETURN_IF_ERROR(CheckF32Rows(x, ctx.device, "MatMul", "x"));
  RETURN_IF_ERROR(CheckF32Rows(*out, ctx.device, "MatMul", "out"));
  RETURN_IF_ERROR(CheckOnDevice(w, ctx.device, "MatMul", "w"));
  if (!CudaDecodes(w.dtype())) {
    return InvalidArgumentError("MatMul: weight dtype " + std::string(DTypeName(w.dtype())) +
                                " is not supported by the CUDA backend (f32, f16, bf16, q4_0, "
                                "q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)");
  }
  if (w.ndim() != 2 || x.ndim() > 2 || out->ndim() != x.ndim()) {
    return InvalidArgumentError("MatMul: expected w [N, K], x [M, K] or [K], out [M, N] or [N]; "
                                "got w " + w.shape().ToString() + ", x " + x.shape().ToString() +
                                ", out " + out->shape().ToString());
  }
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  if (x.dim(-1) != k) {
    return InvalidArgumentError("MatMul: x has " + std::to_string(x.dim(-1)) +
                                " columns but w [N, K] = " + w.shape().ToString() + " has K = " +
                                std::to_string(k));
  }
  if (out->dim(-1) != n || (out->ndim() == 2 && out->dim(0) != m)) {
    return InvalidArgumentError("MatMul: out " + out->shape().ToString() + " should be [" +
                                (x.ndim() == 2 ? std::to_string(m) + ", " : std::string()) +
                                std::to_string(n) + "]");
  }
  if (!w.rows_contiguous() || !RowsAligned(w, RowAlignment(w.dtype()))) {
    return InvalidArgumentError("MatMul: w must have packed, " +
                                std::to_string(RowAlignment(w.dtype())) +
                                "-byte-aligned rows, got " + w.DebugString());
  }
  if (out->ndim() == 2 && out->dim(0) > 1 && out->stride(0) < 4 * out->dim(1)) {
    return InvalidArgumentError("MatMul: out " + out->DebugString() + " has overlapping rows");
  }
  if (Overlaps(*out, x) || Overlaps(*out, w)) {
    return InvalidArgumentError("MatMul: out must not overlap x or w");
  }
  if (n > INT_MAX || k > INT_MAX || m > INT_MAX) {
    return InvalidArgumentError("MatMul: dimensions above 2^31 - 1 are not supported on CUDA");
  }
  return Status::Ok();
}

// A mat×vec launch's input with nothing fused, in the kernel layout the backend chose.
MatVecInput PlainInput(const CudaContext& ctx) {
  MatVecInput in;
  in.coalesced = ctx.coalesced_matvec;
  return in;
}

int64_t RowStride(const Tensor& t, int64_t row_bytes) {
  return t.ndim() == 2 ? t.stride(0) : row_bytes;
}

// The weights (of x [m, k]) as the segments of one mat×vec launch, the launch's rows the weights'
// rows one after another, when they can be: a decode-sized batch, one dtype, at most
// kMatVecMaxSegments non-empty weights. nullopt otherwise.
std::optional<MatVecSegments> SegmentsFor(int64_t m, int64_t k, std::span<const Tensor* const> ws,
                                          std::span<Tensor* const> outs) {
  if (m <= 0 || m > kMatVecMaxRows || k <= 0) return std::nullopt;
  int64_t rows = 0;
  int count = 0;
  for (const Tensor* w : ws) {
    if (w->dtype() != ws[0]->dtype()) return std::nullopt;
    if (w->dim(0) > 0) ++count;
    rows += w->dim(0);
  }
  if (count > kMatVecMaxSegments || rows > INT_MAX) return std::nullopt;
  MatVecSegments segs;
  for (size_t i = 0; i < ws.size(); ++i) {
    const int64_t n = ws[i]->dim(0);
    if (n == 0) continue;
    const int c = segs.count++;
    segs.w[c] = static_cast<const char*>(ws[i]->data());
    segs.w_row_stride[c] = ws[i]->stride(0);
    segs.out[c] = static_cast<char*>(outs[i]->data());
    segs.out_row_stride[c] = RowStride(*outs[i], 4 * n);
    segs.first[c + 1] = segs.first[c] + n;
  }
  return segs;
}

}  // namespace

Status MatMulOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, Tensor* out) {
  RETURN_IF_ERROR(Validate(ctx, x, w, out));
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  if (m == 0 || n == 0) return Status::Ok();
  const auto* xp = static_cast<const char*>(x.data());
  const auto* wp = static_cast<const char*>(w.data());
  auto* op = static_cast<char*>(out->data());
  const int64_t x_rs = RowStride(x, 4 * k), o_rs = RowStride(*out, 4 * n);
  const int64_t w_rs = w.stride(0);
  if (k == 0) {
    return CudaStatus(cudaMemset2DAsync(op, static_cast<size_t>(o_rs), 0,
                                        static_cast<size_t>(4 * n), static_cast<size_t>(m),
                                        ctx.stream),
                      "MatMul with K = 0 (zero fill)");
  }

  // Decode-sized batches, and row layouts cuBLAS cannot express (ld < K: repeated x rows).
  if (m <= kMatVecMaxRows || x_rs < 4 * k) {
    for (int64_t m0 = 0; m0 < m; m0 += kMatVecMaxRows) {
      const int64_t mm = std::min(kMatVecMaxRows, m - m0);
      MUNINN_CUDA_RETURN_IF_ERROR(LaunchMatVec(w.dtype(), wp, w_rs, xp + m0 * x_rs, x_rs, mm, n, k,
                                               op + m0 * o_rs, o_rs, ctx.stream, PlainInput(ctx)));
    }
    return Status::Ok();
  }

  const float alpha = 1.0f, beta = 0.0f;
  const int ni = static_cast<int>(n), mi = static_cast<int>(m), ki = static_cast<int>(k);
  if (w.dtype() == DType::kF32) {
    // Column-major view: out^T [N, M] = (w [N, K]) · (x^T [K, M]).
    MUNINN_CUBLAS_RETURN_IF_ERROR(cublasSgemm(
        ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &alpha,
        reinterpret_cast<const float*>(wp), static_cast<int>(w_rs / 4),
        reinterpret_cast<const float*>(xp), static_cast<int>(x_rs / 4), &beta,
        reinterpret_cast<float*>(op), static_cast<int>(o_rs / 4)));
    return Status::Ok();
  }

  const bool bf16 = w.dtype() == DType::kBF16;
  const cudaDataType_t half_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const DType half_dtype = bf16 ? DType::kBF16 : DType::kF16;
  // x rounded to the weight's 16-bit type: [M, K] packed.
  ASSIGN_OR_RETURN(Tensor xh, ctx.Empty(half_dtype, Shape{m, k}));
  RowLayout lx, lxh;
  lx.n_outer = lxh.n_outer = 1;
  lx.dims[0] = lxh.dims[0] = m;
  lx.strides[0] = x_rs;
  lxh.strides[0] = 2 * k;
  MUNINN_CUDA_RETURN_IF_ERROR(LaunchConvert(DType::kF32, xp, lx, half_dtype,
                                            static_cast<char*>(xh.data()), lxh, m, k, ctx.stream));
  // Weights already in the 16-bit type with aligned rows are used in place.
  const bool in_place = (w.dtype() == DType::kF16 || bf16) && w_rs % 2 == 0;
  // Others decoded whole, once, when the backend's cache has room (then every later prefill
  // reuses them), else tile by tile below.
  if (!in_place && ctx.decoded != nullptr) {
    const Tensor* cached = ctx.decoded->Find(w, half_dtype);
    if (cached == nullptr && ctx.decoded->Fits(static_cast<size_t>(n * k) * 2)) {
      // Without device memory for the whole copy, the tiles below need only kDecodeTileBytes.
      StatusOr<Tensor> whole = ctx.Empty(half_dtype, Shape{n, k});
      if (whole.ok()) {
        MUNINN_CUDA_RETURN_IF_ERROR(
            LaunchDecodeToHalf(w.dtype(), wp, w_rs, n, k, bf16, whole->data(), ctx.stream));
        ctx.decoded->Insert(w, half_dtype, std::move(*whole));
        cached = ctx.decoded->Find(w, half_dtype);
      } else {
        ctx.decoded->StopGrowing();
      }
    }
    if (cached != nullptr) {
      MUNINN_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
          ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &alpha, cached->data(), half_type, ki,
          xh.data(), half_type, ki, &beta, op, CUDA_R_32F, static_cast<int>(o_rs / 4),
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return Status::Ok();
    }
  }
  const int64_t tile_rows = in_place ? n : std::max<int64_t>(1, std::min(n, kDecodeTileBytes / (2 * k)));
  Tensor wh;
  if (!in_place) {
    ASSIGN_OR_RETURN(wh, ctx.Empty(half_dtype, Shape{tile_rows, k}));
  }
  for (int64_t n0 = 0; n0 < n; n0 += tile_rows) {
    const int64_t nn = std::min(tile_rows, n - n0);
    const void* wt = wp + n0 * w_rs;
    int ldw = static_cast<int>(w_rs / 2);
    if (!in_place) {
      MUNINN_CUDA_RETURN_IF_ERROR(LaunchDecodeToHalf(w.dtype(), wp + n0 * w_rs, w_rs, nn, k, bf16,
                                                     wh.data(), ctx.stream));
      wt = wh.data();
      ldw = ki;
    }
    MUNINN_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(nn), mi, ki, &alpha, wt, half_type,
        ldw, xh.data(), half_type, ki, &beta, op + n0 * 4, CUDA_R_32F,
        static_cast<int>(o_rs / 4), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return Status::Ok();
}

Status MatMulSharedOp(const CudaContext& ctx, const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs) {
  for (size_t i = 0; i < ws.size(); ++i) {
    Status st = Validate(ctx, x, *ws[i], outs[i]);
    if (!st.ok()) return st.WithContext("MatMulShared pair " + std::to_string(i));
  }
  const int64_t k = x.dim(-1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  // One launch for a decode-sized batch whose weights share a dtype: the launch's rows are the
  // weights' rows one after another (matvec.cu's segments). Otherwise one MatMul per weight.
  const std::optional<MatVecSegments> segs =
      ws.size() > 1 ? SegmentsFor(m, k, ws, outs) : std::nullopt;
  if (!segs) {
    for (size_t i = 0; i < ws.size(); ++i) RETURN_IF_ERROR(MatMulOp(ctx, x, *ws[i], outs[i]));
    return Status::Ok();
  }
  if (segs->count == 0) return Status::Ok();
  MUNINN_CUDA_RETURN_IF_ERROR(
      LaunchMatVecSegments(ws[0]->dtype(), *segs, static_cast<const char*>(x.data()),
                           RowStride(x, 4 * k), m, k, ctx.stream, PlainInput(ctx)));
  return Status::Ok();
}

// ---- fused decode ops (Backend::MatMulAdd, RmsNormMatMulShared, SwiGluMatMulAdd) ----------------
// One mat×vec launch for a decode-sized batch (M <= kMatVecMaxRows), the norm, the activation or
// the residual add done inside it (matvec.cu's MatVecFuse); larger batches run the plain ops
// through a temporary, as the Backend defaults do.

Status MatMulAddOp(const CudaContext& ctx, const Tensor& x, const Tensor& w, Tensor* out) {
  RETURN_IF_ERROR(Validate(ctx, x, w, out));
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  if (m == 0 || n == 0 || k == 0) return Status::Ok();  // out += 0
  if (m <= kMatVecMaxRows) {
    MatVecInput in = PlainInput(ctx);
    in.fuse = MatVecFuse::kAdd;
    MUNINN_CUDA_RETURN_IF_ERROR(
        LaunchMatVec(w.dtype(), static_cast<const char*>(w.data()), w.stride(0),
                     static_cast<const char*>(x.data()), RowStride(x, 4 * k), m, n, k,
                     static_cast<char*>(out->data()), RowStride(*out, 4 * n), ctx.stream, in));
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Tensor product, ctx.Empty(DType::kF32, out->shape()));
  RETURN_IF_ERROR(MatMulOp(ctx, x, w, &product));
  return AddOp(ctx, *out, product, out);
}

Status RmsNormMatMulSharedOp(const CudaContext& ctx, const Tensor& x, const Tensor& norm_weight,
                             float eps, std::span<const Tensor* const> ws,
                             std::span<Tensor* const> outs) {
  const int64_t k = x.dim(-1);
  RETURN_IF_ERROR(CheckOptionalVector(norm_weight, k, ctx.device, "RmsNormMatMulShared", "weight"));
  RETURN_IF_ERROR(CheckEps(eps, "RmsNormMatMulShared"));
  for (size_t i = 0; i < ws.size(); ++i) {
    Status st = Validate(ctx, x, *ws[i], outs[i]);
    if (!st.ok()) return st.WithContext("RmsNormMatMulShared pair " + std::to_string(i));
    if (norm_weight.defined() && Overlaps(*outs[i], norm_weight)) {
      return InvalidArgumentError("RmsNormMatMulShared: output " + std::to_string(i) +
                                  " overlaps the norm weight");
    }
  }
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  const std::optional<MatVecSegments> segs = SegmentsFor(m, k, ws, outs);
  if (!segs) {
    ASSIGN_OR_RETURN(Tensor normed, ctx.Empty(DType::kF32, x.shape()));
    RETURN_IF_ERROR(RmsNormOp(ctx, x, norm_weight, eps, &normed));
    return MatMulSharedOp(ctx, normed, ws, outs);
  }
  if (segs->count == 0) return Status::Ok();
  MatVecInput in = PlainInput(ctx);
  in.fuse = MatVecFuse::kRmsNorm;
  in.norm_w = norm_weight.defined() ? norm_weight.data_as<const float>() : nullptr;
  in.eps = eps;
  MUNINN_CUDA_RETURN_IF_ERROR(LaunchMatVecSegments(ws[0]->dtype(), *segs,
                                                   static_cast<const char*>(x.data()),
                                                   RowStride(x, 4 * k), m, k, ctx.stream, in));
  return Status::Ok();
}

Status SwiGluMatMulAddOp(const CudaContext& ctx, const Tensor& gate, const Tensor& up,
                         const Tensor& w, Tensor* out) {
  RETURN_IF_ERROR(Validate(ctx, gate, w, out));
  RETURN_IF_ERROR(CheckF32Rows(up, ctx.device, "SwiGluMatMulAdd", "up"));
  if (up.shape() != gate.shape()) {
    return InvalidArgumentError("SwiGluMatMulAdd: up " + up.shape().ToString() +
                                " must have gate's shape " + gate.shape().ToString());
  }
  if (Overlaps(*out, up)) {
    return InvalidArgumentError("SwiGluMatMulAdd: out must not overlap up");
  }
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = gate.ndim() == 2 ? gate.dim(0) : 1;
  if (m == 0 || n == 0 || k == 0) return Status::Ok();  // out += 0
  const int64_t g_rs = RowStride(gate, 4 * k);
  if (m <= kMatVecMaxRows && RowStride(up, 4 * k) == g_rs) {
    MatVecInput in = PlainInput(ctx);
    in.fuse = MatVecFuse::kSwiGluAdd;
    in.x2 = static_cast<const char*>(up.data());
    MUNINN_CUDA_RETURN_IF_ERROR(LaunchMatVec(w.dtype(), static_cast<const char*>(w.data()),
                                             w.stride(0), static_cast<const char*>(gate.data()),
                                             g_rs, m, n, k, static_cast<char*>(out->data()),
                                             RowStride(*out, 4 * n), ctx.stream, in));
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Tensor act, ctx.Empty(DType::kF32, gate.shape()));
  RETURN_IF_ERROR(SwiGluOp(ctx, gate, up, &act));
  return MatMulAddOp(ctx, act, w, out);
}

}  // namespace muninn::cuda
