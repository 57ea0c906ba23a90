// The CUDA backend's TrainOps (contract in muninn/core/train_ops.h; its entry points have checked
// dtypes, shapes, devices and aliasing before these run): cuBLAS sgemm for the matmuls (full f32,
// the handle's CUBLAS_DEFAULT_MATH: no TF32), the kernels of train_kernels.h for the rest. Matmuls
// mirror the host kernels' cblas calls one for one, through RowMajorSgemm below.
//
// Determinism: every kernel reduces in a fixed order (train_kernels.h) and cuBLAS gives the same
// bits for the same call on the same GPU and stream; the cross-entropy's loss is summed on the
// host in row order.
#include "cuda/cuda_train_ops.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_status.h"
#include "cuda/train_kernels.h"

namespace muninn::cuda {
namespace {

const float* F(const Tensor& t) { return t.defined() ? t.data_as<const float>() : nullptr; }
float* F(Tensor* t) { return t != nullptr ? t->data_as<float>() : nullptr; }

Status FitsInt(std::string_view op, int64_t v) {
  if (v > INT_MAX) {
    return InvalidArgumentError(std::string(op) + ": a dimension of " + std::to_string(v) +
                                " exceeds what cuBLAS takes (2^31 - 1)");
  }
  return Status::Ok();
}

// C[m, n] = alpha · op(A) · op(B) + beta · C on packed row-major arrays with leading dims (elements
// per row) lda, ldb, ldc: cblas_sgemm(CblasRowMajor, ...) semantics. cuBLAS is column-major, where
// a row-major X is Xᵀ with the same leading dim, so it computes Cᵀ = op(B)ᵀ · op(A)ᵀ: the operands
// swap places and keep their transposition flags. With beta == 0, C is not read.
Status RowMajorSgemm(const CudaContext& ctx, std::string_view op, bool trans_a, bool trans_b,
                     int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return Status::Ok();
  for (const int64_t v : {m, n, k, lda, ldb, ldc}) RETURN_IF_ERROR(FitsInt(op, v));
  const cublasStatus_t st = cublasSgemm(
      ctx.cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
      static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc));
  return CublasStatus(st, std::string(op) + " (cublasSgemm)");
}

Status Launched(cudaError_t err, std::string_view op, std::string_view kernel) {
  return CudaStatus(err, std::string(op) + ": " + std::string(kernel));
}

// A device scratch tensor of n doubles.
StatusOr<Tensor> DoubleScratch(const CudaContext& ctx, int64_t n) {
  return ctx.Empty(DType::kF64, Shape{std::max<int64_t>(n, 1)});
}

class CudaTrainOps final : public TrainOps {
 public:
  explicit CudaTrainOps(const CudaContext* ctx) : ctx_(*ctx) {}

  std::string name() const override { return "cuda:" + std::to_string(ctx_.device); }
  Device device() const override { return Device::Cuda(ctx_.device); }

 protected:
  Status DoLinear(const Tensor& x, const Tensor& w, Tensor* y) override {
    RETURN_IF_ERROR(Activate());
    const int64_t m = x.dim(0), n_in = x.dim(1), n_out = w.dim(0);
    // y[m, n_out] = x[m, n_in] · w[n_out, n_in]ᵀ
    return RowMajorSgemm(ctx_, "Linear", false, true, m, n_out, n_in, 1.0f, F(x), n_in, F(w), n_in,
                         0.0f, F(y), n_out);
  }

  Status DoLinearBackwardInput(const Tensor& dy, const Tensor& w, bool accumulate,
                               Tensor* dx) override {
    RETURN_IF_ERROR(Activate());
    const int64_t m = dy.dim(0), n_out = w.dim(0), n_in = w.dim(1);
    // dx[m, n_in] (+)= dy[m, n_out] · w[n_out, n_in]
    return RowMajorSgemm(ctx_, "LinearBackwardInput", false, false, m, n_in, n_out, 1.0f, F(dy),
                         n_out, F(w), n_in, accumulate ? 1.0f : 0.0f, F(dx), n_in);
  }

  Status DoLoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd) override {
    RETURN_IF_ERROR(Activate());
    const int64_t n = d.m * d.n_in;
    if (n == 0) return Status::Ok();
    if (d.dropout == 0.0f) {
      if (xd->data() == x.data()) return Status::Ok();
      return Launched(cudaMemcpyAsync(xd->data(), x.data(), static_cast<size_t>(n) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, ctx_.stream),
                      "LoraDropout", "copy");
    }
    const float keep_scale = 1.0f / (1.0f - d.dropout);  // as backward_linear.cc
    return Launched(LaunchLoraDropout(F(x), n, d.dropout, keep_scale, d.seed, F(xd), ctx_.stream),
                    "LoraDropout", "dropout kernel");
  }

  Status DoLoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a, const Tensor& b,
                       Tensor* u, Tensor* y) override {
    RETURN_IF_ERROR(Activate());
    if (d.m == 0) return Status::Ok();
    // u[m, r] = xd[m, n_in] · a[r, n_in]ᵀ
    RETURN_IF_ERROR(RowMajorSgemm(ctx_, "LoraForward", false, true, d.m, d.rank, d.n_in, 1.0f,
                                  F(xd), d.n_in, F(a), d.n_in, 0.0f, F(u), d.rank));
    // y[m, n_out] += scale · u[m, r] · b[n_out, r]ᵀ
    return RowMajorSgemm(ctx_, "LoraForward", false, true, d.m, d.n_out, d.rank, d.scale, F(*u),
                         d.rank, F(b), d.rank, 1.0f, F(y), d.n_out);
  }

  Status DoLoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd, const Tensor& u,
                        const Tensor& a, const Tensor& b, Tensor* da, Tensor* db,
                        Tensor* dx) override {
    RETURN_IF_ERROR(Activate());
    const char* op = "LoraBackward";
    if (d.m == 0) return Status::Ok();
    // db[n_out, r] += scale · dy[m, n_out]ᵀ · u[m, r]
    if (db != nullptr) {
      RETURN_IF_ERROR(RowMajorSgemm(ctx_, op, true, false, d.n_out, d.rank, d.m, d.scale, F(dy),
                                    d.n_out, F(u), d.rank, 1.0f, F(db), d.rank));
    }
    if (da == nullptr && dx == nullptr) return Status::Ok();
    // du[m, r] = scale · dy[m, n_out] · b[n_out, r]
    ASSIGN_OR_RETURN(Tensor du, ctx_.Empty(DType::kF32, Shape{d.m, d.rank}));
    RETURN_IF_ERROR(RowMajorSgemm(ctx_, op, false, false, d.m, d.rank, d.n_out, d.scale, F(dy),
                                  d.n_out, F(b), d.rank, 0.0f, F(&du), d.rank));
    // da[r, n_in] += du[m, r]ᵀ · xd[m, n_in]
    if (da != nullptr) {
      RETURN_IF_ERROR(RowMajorSgemm(ctx_, op, true, false, d.rank, d.n_in, d.m, 1.0f, F(du), d.rank,
                                    F(xd), d.n_in, 1.0f, F(da), d.n_in));
    }
    if (dx == nullptr) return Status::Ok();
    if (d.dropout == 0.0f) {
      // dx[m, n_in] += du[m, r] · a[r, n_in]
      return RowMajorSgemm(ctx_, op, false, false, d.m, d.n_in, d.rank, 1.0f, F(du), d.rank, F(a),
                           d.n_in, 1.0f, F(dx), d.n_in);
    }
    // dxd = du · a, then dx += drop'(dxd) with the forward's mask.
    ASSIGN_OR_RETURN(Tensor dxd, ctx_.Empty(DType::kF32, Shape{d.m, d.n_in}));
    RETURN_IF_ERROR(RowMajorSgemm(ctx_, op, false, false, d.m, d.n_in, d.rank, 1.0f, F(du), d.rank,
                                  F(a), d.n_in, 0.0f, F(&dxd), d.n_in));
    const float keep_scale = 1.0f / (1.0f - d.dropout);
    return Launched(LaunchLoraDropoutAccumulate(F(dxd), d.m * d.n_in, d.dropout, keep_scale, d.seed,
                                                F(dx), ctx_.stream),
                    op, "dropout mask kernel");
  }

  Status DoRmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y) override {
    RETURN_IF_ERROR(Activate());
    return Launched(
        LaunchRmsNormTrainForward(F(x), F(w), x.dim(0), x.dim(1), eps, F(y), ctx_.stream),
        "RmsNormForward", "kernel");
  }

  Status DoRmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps,
                           Tensor* dx, Tensor* dw) override {
    RETURN_IF_ERROR(Activate());
    const char* op = "RmsNormBackward";
    const int64_t rows = x.dim(0), d = x.dim(1);
    if (rows == 0) return Status::Ok();
    ASSIGN_OR_RETURN(Tensor rstd, DoubleScratch(ctx_, rows));
    auto* rstd_p = rstd.data_as<double>();
    RETURN_IF_ERROR(Launched(
        LaunchRmsNormBackwardRows(F(x), F(w), F(dy), rows, d, eps, F(dx), rstd_p, ctx_.stream), op,
        "row kernel"));
    if (dw == nullptr) return Status::Ok();
    ASSIGN_OR_RETURN(Tensor partial, DoubleScratch(ctx_, RmsNormWeightChunks(rows) * d));
    return Launched(LaunchRmsNormWeightGrad(F(x), F(dy), rstd_p, rows, d, partial.data_as<double>(),
                                            F(dw), ctx_.stream),
                    op, "weight-gradient kernels");
  }

  Status DoRopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                        Tensor* dx) override {
    RETURN_IF_ERROR(Activate());
    // Host positions of INT32_MIN were refused at the entry point; the kernel negates in double,
    // exact for every int32 (device positions cannot be checked without a sync).
    return RopeOp(ctx_, dy, positions, params, dx, /*negate_positions=*/true)
        .WithContext("RopeBackward");
  }

  Status DoSwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out) override {
    RETURN_IF_ERROR(Activate());
    return SwiGluOp(ctx_, gate, up, out);  // the backend's SwiGlu (eltwise.cu)
  }

  Status DoSwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor* dgate,
                          Tensor* dup) override {
    RETURN_IF_ERROR(Activate());
    return Launched(
        LaunchSwiGluBackward(F(gate), F(up), F(dy), gate.numel(), F(dgate), F(dup), ctx_.stream),
        "SwiGluBackward", "kernel");
  }

  Status DoAttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                            Tensor* out, Tensor* lse) override {
    RETURN_IF_ERROR(Activate());
    ASSIGN_OR_RETURN(const TrainAttentionLaunch a, MakeAttention("AttentionForward", dims, in));
    return Launched(LaunchAttentionTrainForward(a, F(out), F(lse), ctx_.stream), "AttentionForward",
                    "kernel");
  }

  Status DoAttentionBackward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                             const Tensor& out, const Tensor& lse, const Tensor& dout,
                             const AttentionTrainGrads& g) override {
    RETURN_IF_ERROR(Activate());
    const char* op = "AttentionBackward";
    ASSIGN_OR_RETURN(const TrainAttentionLaunch a, MakeAttention(op, dims, in));
    if (dims.T == 0) {
      // No queries: dk and dv are zero (written), dmem_bias unchanged.
      if (g.dk->numel() > 0) {
        MUNINN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(g.dk->data(), 0, g.dk->nbytes(), ctx_.stream));
      }
      if (g.dv->numel() > 0) {
        MUNINN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(g.dv->data(), 0, g.dv->nbytes(), ctx_.stream));
      }
      return Status::Ok();
    }
    const int64_t rows = dims.T * dims.n_head;
    ASSIGN_OR_RETURN(Tensor D, ctx_.Empty(DType::kF32, Shape{rows}));
    RETURN_IF_ERROR(
        Launched(LaunchAttentionRowDot(F(dout), F(out), rows, dims.dv, F(&D), ctx_.stream), op,
                 "rowsum(dO * O) kernel"));
    Tensor db_part;
    const bool want_db = g.dmem_bias != nullptr && dims.M > 0;
    if (want_db) {
      ASSIGN_OR_RETURN(db_part, DoubleScratch(ctx_, rows));
    }
    double* db_p = want_db ? db_part.data_as<double>() : nullptr;
    RETURN_IF_ERROR(Launched(LaunchAttentionBackwardQuery(a, F(lse), F(dout), F(D), F(g.dq),
                                                          F(g.dmem_q), db_p, ctx_.stream),
                             op, "dQ kernel"));
    if (want_db) {
      RETURN_IF_ERROR(
          Launched(LaunchAttentionBiasGrad(db_p, dims.T, dims.n_head, F(g.dmem_bias), ctx_.stream),
                   op, "dmem_bias kernel"));
    }
    return Launched(
        LaunchAttentionBackwardKeys(a, F(lse), F(dout), F(D), F(g.dk), F(g.dv), ctx_.stream), op,
        "dK/dV kernel");
  }

  StatusOr<CrossEntropyResult> DoCrossEntropy(const Tensor& h, const Tensor& w,
                                              std::span<const int32_t> labels,
                                              const CrossEntropyOptions& options,
                                              Tensor* dh) override {
    RETURN_IF_ERROR(Activate());
    const char* op = "CrossEntropy";
    const int64_t T = h.dim(0), n_embd = h.dim(1), n_vocab = w.dim(0);
    // Supervised rows in order, and their labels.
    std::vector<int32_t> rows, row_labels;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t y = labels[static_cast<size_t>(t)];
      if (y == kIgnoreLabel) continue;
      if (t > std::numeric_limits<int32_t>::max()) {
        return InvalidArgumentError("CrossEntropy: more than 2^31 rows");
      }
      rows.push_back(static_cast<int32_t>(t));
      row_labels.push_back(y);
    }
    CrossEntropyResult result;
    result.n_supervised = static_cast<int64_t>(rows.size());
    if (dh != nullptr && dh->numel() > 0) {
      MUNINN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dh->data(), 0, dh->nbytes(), ctx_.stream));
    }
    if (rows.empty()) return result;
    const auto n_sup = result.n_supervised;
    const float grad_scale = options.grad_scale != 0.0f
                                 ? options.grad_scale
                                 : static_cast<float>(1.0 / static_cast<double>(n_sup));
    const int64_t block = std::min<int64_t>(options.rows_per_block, n_sup);
    const int64_t vtile = std::min<int64_t>(options.vocab_block, n_vocab);

    ASSIGN_OR_RETURN(Tensor rows_d, ctx_.Empty(DType::kI32, Shape{n_sup}));
    ASSIGN_OR_RETURN(Tensor labels_d, ctx_.Empty(DType::kI32, Shape{n_sup}));
    const size_t index_bytes = rows.size() * sizeof(int32_t);
    RETURN_IF_ERROR(ctx_.staging->Upload(rows.data(), index_bytes, rows_d.data(), ctx_.stream));
    RETURN_IF_ERROR(
        ctx_.staging->Upload(row_labels.data(), index_bytes, labels_d.data(), ctx_.stream));
    ASSIGN_OR_RETURN(Tensor hb, ctx_.Empty(DType::kF32, Shape{block, n_embd}));
    ASSIGN_OR_RETURN(Tensor tile, ctx_.Empty(DType::kF32, Shape{block, vtile}));
    Tensor dhb;
    if (dh != nullptr) {
      ASSIGN_OR_RETURN(dhb, ctx_.Empty(DType::kF32, Shape{block, n_embd}));
    }
    ASSIGN_OR_RETURN(Tensor row_max, ctx_.Empty(DType::kF32, Shape{block}));
    ASSIGN_OR_RETURN(Tensor row_sum, DoubleScratch(ctx_, block));
    ASSIGN_OR_RETURN(Tensor label_logit, ctx_.Empty(DType::kF32, Shape{block}));
    ASSIGN_OR_RETURN(Tensor row_lse, ctx_.Empty(DType::kF32, Shape{block}));
    ASSIGN_OR_RETURN(Tensor loss, DoubleScratch(ctx_, n_sup));
    const auto* rows_p = rows_d.data_as<const int32_t>();
    const auto* labels_p = labels_d.data_as<const int32_t>();
    const float* wp = F(w);

    for (int64_t b0 = 0; b0 < n_sup; b0 += block) {
      const int64_t nb = std::min(block, n_sup - b0);
      const int32_t* lb = labels_p + b0;
      RETURN_IF_ERROR(Launched(LaunchGatherRows(F(h), rows_p + b0, nb, n_embd, F(&hb), ctx_.stream),
                               op, "gather"));
      // tile[nb, nv] = hb[nb, E] · w[v0 : v0 + nv, E]ᵀ
      const auto logits = [&](int64_t v0, int64_t nv) {
        return RowMajorSgemm(ctx_, op, false, true, nb, nv, n_embd, 1.0f, F(hb), n_embd,
                             wp + v0 * n_embd, n_embd, 0.0f, F(&tile), nv);
      };

      // Pass A: online log-sum-exp over the vocabulary tiles, in order.
      RETURN_IF_ERROR(Launched(LaunchCrossEntropyInit(nb, F(&row_max), row_sum.data_as<double>(),
                                                      F(&label_logit), ctx_.stream),
                               op, "init"));
      for (int64_t v0 = 0; v0 < n_vocab; v0 += vtile) {
        const int64_t nv = std::min(vtile, n_vocab - v0);
        RETURN_IF_ERROR(logits(v0, nv));
        RETURN_IF_ERROR(Launched(
            LaunchCrossEntropyTileLse(F(tile), nb, nv, v0, lb, F(&row_max),
                                      row_sum.data_as<double>(), F(&label_logit), ctx_.stream),
            op, "log-sum-exp kernel"));
      }
      RETURN_IF_ERROR(Launched(
          LaunchCrossEntropyFinish(F(row_max), row_sum.data_as<const double>(), F(label_logit), nb,
                                   F(&row_lse), loss.data_as<double>() + b0, ctx_.stream),
          op, "loss kernel"));
      if (dh == nullptr) continue;

      // Pass B: G = grad_scale · (softmax - onehot) tile by tile, dhb += G · W_tile.
      MUNINN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
          dhb.data(), 0, static_cast<size_t>(nb * n_embd) * sizeof(float), ctx_.stream));
      for (int64_t v0 = 0; v0 < n_vocab; v0 += vtile) {
        const int64_t nv = std::min(vtile, n_vocab - v0);
        RETURN_IF_ERROR(logits(v0, nv));
        RETURN_IF_ERROR(Launched(LaunchCrossEntropyTileGrad(F(&tile), nb, nv, v0, lb, F(row_lse),
                                                            grad_scale, ctx_.stream),
                                 op, "gradient kernel"));
        // dhb[nb, E] += tile[nb, nv] · w[v0 : v0 + nv, E]
        RETURN_IF_ERROR(RowMajorSgemm(ctx_, op, false, false, nb, n_embd, nv, 1.0f, F(tile), nv,
                                      wp + v0 * n_embd, n_embd, 1.0f, F(&dhb), n_embd));
      }
      RETURN_IF_ERROR(Launched(
          LaunchScatterRows(F(dhb), rows_p + b0, nb, n_embd, F(dh), ctx_.stream), op, "scatter"));
    }

    // The per-row losses, summed on the host in row order (in double, as the CPU).
    std::vector<double> row_loss(static_cast<size_t>(n_sup));
    RETURN_IF_ERROR(ctx_.staging->Download(loss.data(), row_loss.size() * sizeof(double),
                                           row_loss.data(), ctx_.stream));
    for (const double l : row_loss) result.loss_sum += l;
    return result;
  }

  Status DoAddInPlace(const Tensor& x, Tensor* y) override {
    RETURN_IF_ERROR(Activate());
    return AddOp(ctx_, *y, x, y);  // the backend's Add
  }

  Status DoAdamW(const AdamWOptions& o, int64_t step, float lr, const Tensor& grad, Tensor* param,
                 Tensor* m, Tensor* v) override {
    RETURN_IF_ERROR(Activate());
    const AdamWScalars sc = AdamWStepScalars(o, step, lr);  // optimizer.cc's, the same bits
    AdamWLaunch a;
    a.beta1 = o.beta1;
    a.beta2 = o.beta2;
    a.eps = o.eps;
    a.step_size = sc.step_size;
    a.bc2_sqrt = sc.bc2_sqrt;
    a.decay = sc.decay;
    return Launched(LaunchAdamW(a, F(grad), grad.numel(), F(param), F(m), F(v), ctx_.stream),
                    "AdamW", "kernel");
  }

 private:
  // Makes the context's device current for the calling thread (as CudaBackend does per op).
  Status Activate() const { return CudaStatus(cudaSetDevice(ctx_.device), "cudaSetDevice"); }

  // The kernels' view of one attention call, with the limits of these kernels checked.
  static StatusOr<TrainAttentionLaunch> MakeAttention(std::string_view op,
                                                      const AttentionTrainDims& dims,
                                                      const AttentionTrainTensors& in) {
    if (dims.d > kTrainAttnMaxHeadDim || dims.dv > kTrainAttnMaxHeadDim) {
      return InvalidArgumentError(std::string(op) + ": the CUDA kernels take head dims up to " +
                                  std::to_string(kTrainAttnMaxHeadDim) + ", got d = " +
                                  std::to_string(dims.d) + ", dv = " + std::to_string(dims.dv));
    }
    if (dims.T > 0 && dims.S + dims.M == 0) {
      return InvalidArgumentError(std::string(op) + ": queries but no keys (S = M = 0)");
    }
    TrainAttentionLaunch a;
    a.q = F(in.q);
    a.k = F(in.k);
    a.v = F(in.v);
    a.mem_q = F(in.mem_q);
    a.mem_k = dims.M > 0 ? F(in.mem_k) : nullptr;
    a.mem_v = dims.M > 0 ? F(in.mem_v) : nullptr;
    a.mem_bias = F(in.mem_bias);
    a.T = dims.T;
    a.S = dims.S;
    a.M = dims.M;
    a.n_head = dims.n_head;
    a.n_head_kv = dims.n_head_kv;
    a.d = dims.d;
    a.dv = dims.dv;
    // attention_backward.cc's resolution of scale 0.
    a.scale = dims.scale != 0.0f ? dims.scale
                                 : static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims.d)));
    a.causal = dims.causal;
    return a;
  }

  const CudaContext& ctx_;
};

}  // namespace

std::unique_ptr<TrainOps> MakeCudaTrainOps(const CudaContext* ctx) {
  return std::make_unique<CudaTrainOps>(ctx);
}

}  // namespace muninn::cuda
