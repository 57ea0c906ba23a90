// TrainOps: the training forward/backward kernels (backward.h, attention_backward.h,
// cross_entropy.h, optimizer.h) as operations on tensors that live on one backend's device, so
// that a trainer written once runs on the CPU or on a GPU (issue 15: "the ops the trainer needs").
//
// Obtain one from a backend: `backend->CreateTrainOps(pool)` (backend.h). The CPU backend's calls
// the host kernels named below on the tensors' bytes (same results, bit for bit, as calling them
// directly); the CUDA backend's runs CUDA kernels and cuBLAS on device memory.
//
// Argument rules shared by every op (checked here, in the non-virtual entry points, before any
// output is touched; a violation is InvalidArgument naming the op and the operand):
//  - every tensor is f32, packed (contiguous) and on device(); shapes are as each op says;
//  - except Rope positions (i32 [T], host or device) and CrossEntropy labels (a host span);
//  - outputs are preallocated; an output marked "may be null" is skipped when null;
//  - outputs do not overlap inputs unless the op says "in place".
// Gradients of activations are written unless the op says "added"; gradients of parameters (LoRA
// A/B, norm weights, memory biases) are always added, as in backward.h.
//
// Results do not depend on thread counts or launch shapes: every reduction runs in a fixed order
// (CPU: backward.h's block order; CUDA: one thread per output element or a fixed tree), so two
// runs give the same bits. CPU and CUDA differ by float rounding (cuBLAS vs OpenBLAS, device
// exp/log).
//
// The CUDA implementation (core/src/cuda/cuda_train_ops.cc) takes attention head dims up to 256
// (InvalidArgument above). RoPE positions already on the device are negated in double there, exact
// for every int32; host positions of INT32_MIN are refused here for every backend.
//
// Thread-compatible, like a backend: one call at a time. Work may be queued on the device: results
// are visible to Backend::Transfer of the same backend (same stream) and to later ops.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "muninn/core/attention_backward.h"
#include "muninn/core/backend.h"
#include "muninn/core/backward.h"
#include "muninn/core/cross_entropy.h"
#include "muninn/core/optimizer.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn {

// The tensors of one training attention call (attention_backward.h's arrays, same shapes).
struct AttentionTrainTensors {
  Tensor q;         // [T, n_head, d]
  Tensor k;         // [S, n_head_kv, d]
  Tensor v;         // [S, n_head_kv, dv]
  Tensor mem_q;     // [T, n_head, d], or undefined (memory keys scored with q)
  Tensor mem_k;     // [M, n_head_kv, d], or undefined when dims.M == 0
  Tensor mem_v;     // [M, n_head_kv, dv], or undefined when dims.M == 0
  Tensor mem_bias;  // [n_head] per-head memory logit bias, or undefined (0)
};

// The outputs of AttentionBackward. dq, dk, dv are written; dmem_q is written and required when
// mem_q is given (null otherwise); dmem_bias [n_head] may be null, is added to.
struct AttentionTrainGrads {
  Tensor* dq = nullptr;
  Tensor* dk = nullptr;
  Tensor* dv = nullptr;
  Tensor* dmem_q = nullptr;
  Tensor* dmem_bias = nullptr;
};

class TrainOps {
 public:
  virtual ~TrainOps() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // y[m, n_out] = x[m, n_in] · w[n_out, n_in]ᵀ (w: the trainer's f32 copy of a frozen weight).
  Status Linear(const Tensor& x, const Tensor& w, Tensor* y);
  // dx[m, n_in] = dy[m, n_out] · w[n_out, n_in]; added to dx when `accumulate`.
  Status LinearBackwardInput(const Tensor& dy, const Tensor& w, bool accumulate, Tensor* dx);

  // LoRA (backward.h): d.m, d.n_in, d.n_out, d.rank must match the tensors' shapes.
  // xd[m, n_in] = drop(x); x: [m, n_in]. In place (xd == x) is allowed.
  Status LoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd);
  // u[m, rank] = xd · aᵀ (written), y[m, n_out] += scale · u · bᵀ;
  // a: [rank, n_in], b: [n_out, rank].
  Status LoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a, const Tensor& b,
                     Tensor* u, Tensor* y);
  // da [rank, n_in] and db [n_out, rank] added, dx [m, n_in] added (the LoRA path's share); each
  // may be null.
  Status LoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd, const Tensor& u,
                      const Tensor& a, const Tensor& b, Tensor* da, Tensor* db, Tensor* dx);

  // y[rows, d] = x / sqrt(mean(x²) + eps) · w (sums of squares in double); w: [d].
  Status RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y);
  // backward.h's RmsNormBackward: dx written; w [d] or undefined (= 1); dw [d] added, may be null.
  Status RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor* dx,
                         Tensor* dw);
  // dx = the input gradient of Backend::Rope(x, positions, params); dy, dx: [T, n_head, head_dim];
  // positions: i32 [T] on the host or the device; a host position of INT32_MIN (which cannot be
  // negated) is InvalidArgument. In place (dx == dy) is allowed.
  Status RopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                      Tensor* dx);
  // out = silu(gate) · up with silu(g) = g / (1 + exp(-g)); all the same shape.
  Status SwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out);
  // backward.h's SwiGluBackward: dgate and dup written.
  Status SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor* dgate,
                        Tensor* dup);

  // attention_backward.h's AttentionForwardTrain: out [T, n_head, dv] and lse [T, n_head].
  // dims.isa chooses the CPU kernel family; device implementations ignore it. Queries need keys:
  // T > 0 with S = M = 0 is InvalidArgument.
  Status AttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                          Tensor* out, Tensor* lse);
  // attention_backward.h's AttentionBackward from the forward's out and lse and dout.
  Status AttentionBackward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                           const Tensor& out, const Tensor& lse, const Tensor& dout,
                           const AttentionTrainGrads& grads);

  // cross_entropy.h's FusedCrossEntropy: h [T, n_embd], w [n_vocab, n_embd], labels: T host
  // values; dh [T, n_embd] written, may be null (loss only). Waits for the device (the loss is a
  // host value).
  StatusOr<CrossEntropyResult> CrossEntropy(const Tensor& h, const Tensor& w,
                                            std::span<const int32_t> labels,
                                            const CrossEntropyOptions& options, Tensor* dh);

  // y += x (same shape).
  Status AddInPlace(const Tensor& x, Tensor* y);

  // optimizer.h's AdamWStep on n = param.numel() values: param, m, v updated in place.
  Status AdamW(const AdamWOptions& options, int64_t step, float lr, const Tensor& grad,
               Tensor* param, Tensor* m, Tensor* v);

 protected:
  // The kernels, called after the checks above passed (shapes consistent, devices right).
  virtual Status DoLinear(const Tensor& x, const Tensor& w, Tensor* y) = 0;
  virtual Status DoLinearBackwardInput(const Tensor& dy, const Tensor& w, bool accumulate,
                                       Tensor* dx) = 0;
  virtual Status DoLoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd) = 0;
  virtual Status DoLoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a,
                               const Tensor& b, Tensor* u, Tensor* y) = 0;
  virtual Status DoLoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd,
                                const Tensor& u, const Tensor& a, const Tensor& b, Tensor* da,
                                Tensor* db, Tensor* dx) = 0;
  virtual Status DoRmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y) = 0;
  virtual Status DoRmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps,
                                   Tensor* dx, Tensor* dw) = 0;
  virtual Status DoRopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                                Tensor* dx) = 0;
  virtual Status DoSwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out) = 0;
  virtual Status DoSwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy,
                                  Tensor* dgate, Tensor* dup) = 0;
  virtual Status DoAttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                                    Tensor* out, Tensor* lse) = 0;
  virtual Status DoAttentionBackward(const AttentionTrainDims& dims,
                                     const AttentionTrainTensors& in, const Tensor& out,
                                     const Tensor& lse, const Tensor& dout,
                                     const AttentionTrainGrads& grads) = 0;
  // Labels are checked (each in [0, n_vocab) or kIgnoreLabel) and options validated before.
  virtual StatusOr<CrossEntropyResult> DoCrossEntropy(const Tensor& h, const Tensor& w,
                                                      std::span<const int32_t> labels,
                                                      const CrossEntropyOptions& options,
                                                      Tensor* dh) = 0;
  virtual Status DoAddInPlace(const Tensor& x, Tensor* y) = 0;
  virtual Status DoAdamW(const AdamWOptions& options, int64_t step, float lr, const Tensor& grad,
                         Tensor* param, Tensor* m, Tensor* v) = 0;
};

}  // namespace muninn
