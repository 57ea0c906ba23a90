// MatMul on the CPU: out[M, N] = x[M, K] · w[N, K]ᵀ (convention in backend.h).
//
//  - f32 weights with M > 1: OpenBLAS sgemm (prefill, training); f16/bf16 weights with M >= 16:
//    sgemm on tiles of weight rows converted to f32.
//  - exact mode (CpuBackendOptions::exact_matmul) with block-quantized weights: activations stay
//    f32. Tiles of weight rows are dequantized to f32 (DequantizeRow, per thread, never the whole
//    matrix) and multiplied in f32: sgemm on the tile for M >= 16, f32 SIMD dots otherwise. The
//    only rounding is float32's, as in a framework that runs on dequantized weights.
//  - q4_0/q4_1/q5_0/q5_1/q8_0 weights with M >= kVnniGemmMinRows on AVX-512 VNNI machines: the
//    register-blocked integer GEMM of quant_gemm.h (same q8_0 activations as the dot path);
//    q4_0/q4_1 with fewer rows (decode): quant_gemm.h's grouped kernel, activations laid out to
//    match four weight blocks at a time.
//  - everything else: each activation row is converted once to the weight's activation format
//    (q8_0 / q8_1 / q8_K, or kept as f32 for f32/f16/bf16 weights), then one dot kernel per
//    (weight row, activation row) on the weight's own encoding. Output rows are split across the
//    thread pool by weight row, so each thread streams a disjoint slice of w exactly once; within
//    a slice, tiles of weight rows stay in cache while every activation row passes over them.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/quant_dot.h"
#include "cpu/quant_gemm.h"
#include "cpu/view_checks.h"
#include "muninn/core/quant.h"

namespace muninn::cpu {
namespace {

constexpr const char* kOp = "MatMul";

Status Validate(const Tensor& x, const Tensor& w, const Tensor& out) {
  if (!x.defined() || !w.defined() || !out.defined()) {
    return InvalidArgumentError("MatMul: x, w and out must all be defined tensors");
  }
  if (!x.device().is_cpu() || !w.device().is_cpu() || !out.device().is_cpu()) {
    return InvalidArgumentError("MatMul on the CPU backend needs host tensors; got x on " +
                                x.device().ToString() + ", w on " + w.device().ToString() +
                                ", out on " + out.device().ToString());
  }
  if (x.dtype() != DType::kF32 || out.dtype() != DType::kF32) {
    return InvalidArgumentError("MatMul: x and out must be f32, got x " +
                                std::string(DTypeName(x.dtype())) + " and out " +
                                std::string(DTypeName(out.dtype())));
  }
  if (ScalarVecDot(w.dtype()) == nullptr) {
    return InvalidArgumentError("MatMul: weight dtype " + std::string(DTypeName(w.dtype())) +
                                " is not supported (use f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, "
                                "q8_0, q4_K, q5_K or q6_K)");
  }
  if (w.ndim() != 2 || x.ndim() < 1 || x.ndim() > 2 || out.ndim() != x.ndim()) {
    return InvalidArgumentError(
        "MatMul: expected w [N, K], x [M, K] or [K], out [M, N] or [N]; "
        "got w " +
        w.shape().ToString() + ", x " + x.shape().ToString() + ", out " + out.shape().ToString());
  }
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  if (x.dim(-1) != k) {
    return InvalidArgumentError("MatMul: x has " + std::to_string(x.dim(-1)) +
                                " columns but w [N, K] = " + w.shape().ToString() +
                                " has K = " + std::to_string(k));
  }
  if (out.dim(-1) != n || (out.ndim() == 2 && out.dim(0) != m)) {
    return InvalidArgumentError("MatMul: out " + out.shape().ToString() + " should be [" +
                                (x.ndim() == 2 ? std::to_string(m) + ", " : std::string()) +
                                std::to_string(n) + "]");
  }
  if (!x.rows_contiguous() || !out.rows_contiguous() || !w.rows_contiguous()) {
    return InvalidArgumentError(
        "MatMul: the innermost dimension of x, w and out must be packed "
        "(row strides may be anything); got x " +
        x.DebugString() + ", w " + w.DebugString() + ", out " + out.DebugString());
  }
  RETURN_IF_ERROR(CheckRowAlignment(kOp, "x", x, 4));
  RETURN_IF_ERROR(CheckRowAlignment(kOp, "out", out, 4));
  RETURN_IF_ERROR(CheckRowAlignment(kOp, "w", w, RowAlignment(w.dtype())));
  if (out.ndim() == 2 && out.dim(0) > 1 && out.stride(0) < 4 * out.dim(1)) {
    return InvalidArgumentError("MatMul: out " + out.DebugString() + " has overlapping rows");
  }
  if (Overlaps(out, x) || Overlaps(out, w)) {
    return InvalidArgumentError("MatMul: out must not overlap x or w");
  }
  return Status::Ok();
}

// Weight rows per tile: the tile is reused by every activation row, so it should stay in L1/L2.
int64_t TileRows(size_t w_row_bytes) {
  return std::clamp<int64_t>(static_cast<int64_t>((32u << 10) / std::max<size_t>(w_row_bytes, 1)),
                             1, 64);
}

void Sgemm(const Tensor& x, const Tensor& w, Tensor* out, int64_t m, int64_t n, int64_t k) {
  // Row-major: out[m, n] = x[m, k] · w[n, k]ᵀ, with the row strides of the views as leading
  // dimensions (all three have packed rows, checked above).
  const auto ld = [](const Tensor& t, int64_t cols) {
    return t.ndim() == 2 && t.dim(0) > 1 ? static_cast<blasint>(t.stride(0) / 4)
                                         : static_cast<blasint>(std::max<int64_t>(cols, 1));
  };
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, x.data_as<const float>(),
              ld(x, k), w.data_as<const float>(), ld(w, k), 0.0f, out->data_as<float>(),
              ld(*out, n));
}

// f16/bf16 weights with a batch of rows (and, in exact mode, block-quantized ones): converting a
// tile of weight rows to f32 once and multiplying it with sgemm beats converting every weight row
// once per activation row in the dot kernels. Tiles are bounded ([kTile, K] f32, 4 MiB at
// K = 2048), never a full f32 copy of w.
void DequantTileSgemm(const CpuContext& ctx, const Tensor& x, const Tensor& w, Tensor* out,
                      int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kTile = 512;
  std::unique_ptr<float[]> tile(new float[static_cast<size_t>(kTile * k)]);  // [kTile, K]
  const auto* w_base = static_cast<const char*>(w.data());
  const bool half = w.dtype() == DType::kF16 || w.dtype() == DType::kBF16;
  const auto ld = [](const Tensor& t, int64_t cols) {
    return t.ndim() == 2 && t.dim(0) > 1 ? static_cast<blasint>(t.stride(0) / 4)
                                         : static_cast<blasint>(std::max<int64_t>(cols, 1));
  };
  for (int64_t t0 = 0; t0 < n; t0 += kTile) {
    const int64_t rows = std::min(kTile, n - t0);
    ParallelFor(ctx.pool, rows, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const char* src = w_base + (t0 + r) * w.stride(0);
        if (half && ctx.isa != CpuIsa::kScalar) {
          Avx2HalfToF32(w.dtype(), reinterpret_cast<const uint16_t*>(src), tile.get() + r * k, k);
        } else {
          DequantizeRow(w.dtype(), src, tile.get() + r * k, k);
        }
      }
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
                static_cast<blasint>(rows), static_cast<blasint>(k), 1.0f, x.data_as<const float>(),
                ld(x, k), tile.get(), static_cast<blasint>(k), 0.0f, out->data_as<float>() + t0,
                ld(*out, n));
  }
}

// Exact mode with few activation rows (decode): each thread dequantizes a tile of its weight rows
// into its own buffer ([tile, K] f32, about 32 KiB) and dots every activation row with it in f32,
// so the weights are still streamed once and the activations are never quantized. Any row
// strides are accepted (x may be a broadcast view).
void ExactDotMatMul(const CpuContext& ctx, const Tensor& x, const Tensor& w, Tensor* out,
                    int64_t m, int64_t n, int64_t k) {
  const VecDotFn dot = SelectVecDot(DType::kF32, ctx.isa);
  const auto* x_base = static_cast<const char*>(x.data());
  const int64_t x_stride = x.ndim() == 2 ? x.stride(0) : 0;           // bytes
  const int64_t out_stride = out->ndim() == 2 ? out->stride(0) : 0;   // bytes
  auto* out_base = static_cast<char*>(out->data());
  const auto* w_base = static_cast<const char*>(w.data());
  const int64_t w_stride = w.stride(0);
  const int64_t tile = TileRows(sizeof(float) * static_cast<size_t>(k));
  // Dequantizing a row costs about as much as a few dots with it: ~64 KiB of f32 work per chunk.
  const int64_t min_chunk = std::max<int64_t>(
      1, static_cast<int64_t>((64u << 10) / (sizeof(float) * static_cast<size_t>(k * (m + 1)))));
  ParallelFor(ctx.pool, n, min_chunk, [&](int64_t begin, int64_t end) {
    const int64_t rows = std::min(tile, end - begin);
    std::unique_ptr<float[]> buf(new float[static_cast<size_t>(rows * k)]);  // [rows, K]
    for (int64_t t0 = begin; t0 < end; t0 += tile) {
      const int64_t t1 = std::min(end, t0 + tile);
      for (int64_t j = t0; j < t1; ++j) {
        DequantizeRow(w.dtype(), w_base + j * w_stride, buf.get() + (j - t0) * k, k);
      }
      for (int64_t i = 0; i < m; ++i) {
        const char* xr = x_base + i * x_stride;
        auto* orow = reinterpret_cast<float*>(out_base + i * out_stride);
        for (int64_t j = t0; j < t1; ++j) orow[j] = dot(k, buf.get() + (j - t0) * k, xr);
      }
    }
  });
}

// Below this many activation rows the f16/bf16 (and exact-mode) dot kernels win over tile
// conversion + sgemm.
constexpr int64_t kHalfSgemmMinRows = 16;

// From this many activation rows on, unpacking a tile of weight rows once for the VNNI GEMM costs
// less than unpacking every weight block once per activation row in the dot kernels.
constexpr int64_t kVnniGemmMinRows = 4;

void VnniMatMul(const CpuContext& ctx, const Tensor& x, const Tensor& w, Tensor* out, int64_t m,
                int64_t n, int64_t k) {
  const int64_t x_stride = x.ndim() == 2 ? x.stride(0) : 0;          // bytes
  const int64_t out_stride = out->ndim() == 2 ? out->stride(0) : 0;  // bytes
  VnniGemmActs acts(m, k);
  const auto* x_base = static_cast<const char*>(x.data());
  ParallelFor(ctx.pool, m, 16, [&](int64_t begin, int64_t end) {
    acts.Pack(w.dtype(), x_base, x_stride, begin, end);
  });
  const auto* w_base = static_cast<const char*>(w.data());
  auto* out_base = static_cast<char*>(out->data());
  // Weight rows split across threads; each thread unpacks and streams its own slice once.
  ParallelFor(ctx.pool, n, 32, [&](int64_t begin, int64_t end) {
    VnniGemm(w.dtype(), w_base, w.stride(0), begin, end, acts, out_base, out_stride);
  });
}

// One weight of a run of matrices that share the input (MatMulShared; a single MatMul is a run
// of one): its rows are [first, first + n) of the run's combined rows.
struct RowSegment {
  const char* w = nullptr;
  int64_t w_stride = 0;  // bytes
  char* out = nullptr;
  int64_t out_stride = 0;  // bytes
  int64_t first = 0;
  int64_t n = 0;
};

RowSegment SegmentOf(const Tensor& w, const Tensor& out, int64_t first) {
  return RowSegment{static_cast<const char*>(w.data()), w.stride(0),
                    static_cast<char*>(out.data()), out.ndim() == 2 ? out.stride(0) : 0, first,
                    w.dim(0)};
}

// fn(segment, j0, j1) for the rows [j0, j1) of each segment that [begin, end) of the run covers.
template <class Fn>
void ForSegmentRows(std::span<const RowSegment> segs, int64_t begin, int64_t end, Fn&& fn) {
  for (const RowSegment& s : segs) {
    const int64_t b = std::max(begin, s.first), e = std::min(end, s.first + s.n);
    if (b < e) fn(s, b - s.first, e - s.first);
  }
}

int64_t RunRows(std::span<const RowSegment> segs) { return segs.back().first + segs.back().n; }

// Weight rows per thread chunk: enough that waking the pool is worth it (~64 KiB of weights x
// activations).
int64_t MinChunk(size_t w_row_bytes, int64_t m) {
  return std::max<int64_t>(
      1, static_cast<int64_t>((64u << 10) / (w_row_bytes * static_cast<size_t>(m))));
}

// Decode with q4_0/q4_1 weights on VNNI machines: activations packed once for the grouped q4
// kernel (quant_gemm.h), the run's weight rows split across threads as in the dot path below.
void VnniQ4MatVec(const CpuContext& ctx, const Tensor& x, DType wt,
                  std::span<const RowSegment> segs, int64_t m, int64_t k) {
  const int64_t x_stride = x.ndim() == 2 ? x.stride(0) : 0;  // bytes
  const int64_t act_bytes = VnniQ4ActBytes(k);
  // [M, act_bytes], 64-byte aligned (the kernel loads whole cache lines)
  std::unique_ptr<char[]> storage(new char[static_cast<size_t>(m * act_bytes + 64)]);
  char* acts = storage.get() + (64 - reinterpret_cast<uintptr_t>(storage.get()) % 64) % 64;
  const auto* x_base = static_cast<const char*>(x.data());
  for (int64_t i = 0; i < m; ++i) {
    VnniQ4PackAct(wt, reinterpret_cast<const float*>(x_base + i * x_stride), k,
                  acts + i * act_bytes);
  }
  const int64_t min_chunk = MinChunk(*RowBytes(wt, k), m);
  ParallelFor(ctx.pool, RunRows(segs), min_chunk, [&](int64_t begin, int64_t end) {
    ForSegmentRows(segs, begin, end, [&](const RowSegment& s, int64_t j0, int64_t j1) {
      for (int64_t i = 0; i < m; ++i) {
        const char* a = acts + i * act_bytes;
        auto* orow = reinterpret_cast<float*>(s.out + i * s.out_stride);
        for (int64_t j = j0; j < j1; ++j) orow[j] = VnniQ4Dot(wt, k, s.w + j * s.w_stride, a);
      }
    });
  });
}

// Every other case: each activation row converted once to the weight's activation format, then
// one dot kernel per (weight row, activation row), tiles of weight rows kept in cache while every
// activation row passes over them.
Status DotMatMul(const CpuContext& ctx, const Tensor& x, DType wt,
                 std::span<const RowSegment> segs, int64_t m, int64_t k) {
  const int64_t x_stride = x.ndim() == 2 ? x.stride(0) : 0;  // bytes
  const VecDotFn dot = SelectVecDot(wt, ctx.isa);
  const DType act = ActivationDType(wt);
  // Activation rows in the kernel's format: [M, row_bytes(act, K)] packed, or x itself for f32.
  const char* act_base = static_cast<const char*>(x.data());
  int64_t act_stride = x_stride;
  std::unique_ptr<float[]> act_storage;  // float-typed so q8_K's f32 fields are aligned
  if (act != DType::kF32) {
    const std::optional<size_t> row_bytes = RowBytes(act, k);
    if (!row_bytes) {
      return InvalidArgumentError("MatMul: K = " + std::to_string(k) +
                                  " is not a multiple of the " + std::string(DTypeName(act)) +
                                  " block size");
    }
    act_stride = static_cast<int64_t>(*row_bytes);
    act_storage.reset(new float[(static_cast<size_t>(m) * *row_bytes + 3) / 4]);
    char* dst = reinterpret_cast<char*>(act_storage.get());
    ParallelFor(ctx.pool, m, 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const auto* src = reinterpret_cast<const float*>(act_base + i * x_stride);
        if (ctx.isa == CpuIsa::kAvx512 && (act == DType::kQ8_0 || act == DType::kQ8_1)) {
          Avx512QuantizeQ8Row(act, src, dst + i * act_stride, k);
        } else {
          // Cannot fail: act is quantizable and K is block-aligned (checked above).
          QuantizeRow(act, src, dst + i * act_stride, k).IgnoreError();
        }
      }
    });
    act_base = dst;
  }

  const size_t w_row_bytes = *RowBytes(wt, k);
  const int64_t tile = TileRows(w_row_bytes);
  ParallelFor(ctx.pool, RunRows(segs), MinChunk(w_row_bytes, m), [&](int64_t begin, int64_t end) {
    ForSegmentRows(segs, begin, end, [&](const RowSegment& s, int64_t j0, int64_t j1) {
      for (int64_t t0 = j0; t0 < j1; t0 += tile) {
        const int64_t t1 = std::min(j1, t0 + tile);
        for (int64_t i = 0; i < m; ++i) {
          const char* xr = act_base + i * act_stride;
          auto* orow = reinterpret_cast<float*>(s.out + i * s.out_stride);
          for (int64_t j = t0; j < t1; ++j) orow[j] = dot(k, s.w + j * s.w_stride, xr);
        }
      }
    });
  });
  return Status::Ok();
}

// The kernel family a call takes (the file comment's list, in its order).
enum class Path : uint8_t { kSgemm, kHalfTiles, kExactTiles, kExactDot, kVnniGemm, kVnniQ4, kDot };

Path ChoosePath(const CpuContext& ctx, const Tensor& x, const Tensor& w, int64_t m, int64_t k) {
  const int64_t x_stride = x.ndim() == 2 ? x.stride(0) : 0;  // bytes
  const int64_t n = w.dim(0);
  // sgemm needs leading dimensions >= K; views with overlapping rows (a broadcast x, say) take the
  // dot-kernel path, which accepts any row stride.
  const bool blas_strides = (m == 1 || x_stride >= 4 * k) && (n == 1 || w.stride(0) >= 4 * k);
  if (w.dtype() == DType::kF32 && m > 1 && blas_strides) return Path::kSgemm;
  if ((w.dtype() == DType::kF16 || w.dtype() == DType::kBF16) && m >= kHalfSgemmMinRows &&
      (m == 1 || x_stride >= 4 * k)) {
    return Path::kHalfTiles;
  }
  if (ctx.exact_matmul && ActivationDType(w.dtype()) != DType::kF32) {
    return m >= kHalfSgemmMinRows && blas_strides ? Path::kExactTiles : Path::kExactDot;
  }
  if (ctx.vnni_gemm && m >= kVnniGemmMinRows && VnniGemmSupports(w.dtype())) {
    return Path::kVnniGemm;
  }
  if (ctx.vnni_gemm && (w.dtype() == DType::kQ4_0 || w.dtype() == DType::kQ4_1)) {
    return Path::kVnniQ4;
  }
  return Path::kDot;
}

// The row-split paths, for a run of one or more weights of dtype `wt`.
Status RunRowPath(const CpuContext& ctx, Path path, const Tensor& x, DType wt,
                  std::span<const RowSegment> segs, int64_t m, int64_t k) {
  if (path == Path::kVnniQ4) {
    VnniQ4MatVec(ctx, x, wt, segs, m, k);
    return Status::Ok();
  }
  return DotMatMul(ctx, x, wt, segs, m, k);
}

}  // namespace

Status MatMulOp(const CpuContext& ctx, const Tensor& x, const Tensor& w, Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("MatMul: out is null");
  RETURN_IF_ERROR(Validate(x, w, *out));
  const int64_t n = w.dim(0), k = w.dim(1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  const int64_t out_stride = out->ndim() == 2 ? out->stride(0) : 0;  // bytes
  if (m == 0 || n == 0) return Status::Ok();
  auto* out_base = static_cast<char*>(out->data());
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) std::memset(out_base + i * out_stride, 0, sizeof(float) * n);
    return Status::Ok();
  }
  const Path path = ChoosePath(ctx, x, w, m, k);
  switch (path) {
    case Path::kSgemm:
      Sgemm(x, w, out, m, n, k);
      return Status::Ok();
    case Path::kHalfTiles:
    case Path::kExactTiles:
      DequantTileSgemm(ctx, x, w, out, m, n, k);
      return Status::Ok();
    case Path::kExactDot:
      ExactDotMatMul(ctx, x, w, out, m, n, k);
      return Status::Ok();
    case Path::kVnniGemm:
      VnniMatMul(ctx, x, w, out, m, n, k);
      return Status::Ok();
    case Path::kVnniQ4:
    case Path::kDot:
      break;
  }
  const RowSegment seg = SegmentOf(w, *out, 0);
  return RunRowPath(ctx, path, x, w.dtype(), std::span(&seg, 1), m, k);
}

Status MatMulSharedOp(const CpuContext& ctx, const Tensor& x, std::span<const Tensor* const> ws,
                      std::span<Tensor* const> outs) {
  // The shared checks (counts, overlaps between pairs) come from the caller; every pair's own
  // checks run here, all before anything is written.
  for (size_t i = 0; i < ws.size(); ++i) {
    Status st = Validate(x, *ws[i], *outs[i]);
    if (!st.ok()) return st.WithContext("MatMulShared pair " + std::to_string(i));
  }
  const int64_t k = x.dim(-1);
  const int64_t m = x.ndim() == 2 ? x.dim(0) : 1;
  // One dispatch when every weight takes the same row-split path (decode): the activations are
  // converted once and the threads split the weights' rows together.
  bool fuse = ws.size() > 1 && m > 0 && k > 0;
  const Path path = fuse ? ChoosePath(ctx, x, *ws[0], m, k) : Path::kDot;
  fuse = fuse && (path == Path::kVnniQ4 || path == Path::kDot);
  for (size_t i = 1; fuse && i < ws.size(); ++i) {
    fuse = ws[i]->dtype() == ws[0]->dtype() && ChoosePath(ctx, x, *ws[i], m, k) == path;
  }
  if (!fuse) {
    for (size_t i = 0; i < ws.size(); ++i) RETURN_IF_ERROR(MatMulOp(ctx, x, *ws[i], outs[i]));
    return Status::Ok();
  }
  std::vector<RowSegment> segs;  // the non-empty weights, their rows one after another
  int64_t first = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i]->dim(0) == 0) continue;
    segs.push_back(SegmentOf(*ws[i], *outs[i], first));
    first += ws[i]->dim(0);
  }
  if (segs.empty()) return Status::Ok();
  return RunRowPath(ctx, path, x, ws[0]->dtype(), segs, m, k);
}

}  // namespace muninn::cpu
