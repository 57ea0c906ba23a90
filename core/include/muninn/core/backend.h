// Backend: the interface every compute backend implements (CPU now, CUDA later).
//
// Matmul convention, stated once for all of muninn: weights are stored the way checkpoints store
// them, one output feature per row, w: [n_out, n_in]. MatMul computes out = x · wᵀ with
// x: [M, n_in] (f32) and out: [M, n_out] (f32); w may be any dtype the backend supports
// (f32, f16, bf16, or a block-quantized type computed on its blocks directly).
//
// All ops take preallocated outputs (`out`), validate dtypes/shapes/devices up front and return
// InvalidArgument without touching `out` when they do not fit. Unless an op says otherwise, inputs
// may be strided views whose innermost dimension is packed, and `out` may alias an input of
// identical shape and strides (in-place) for element-wise ops.
//
// Thread-safety: a backend may be used from one thread at a time; it parallelises internally.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "muninn/core/device.h"
#include "muninn/core/dtype.h"
#include "muninn/core/status.h"
#include "muninn/core/tensor.h"

namespace muninn {

class ThreadPool;
class TrainOps;  // train_ops.h

enum class OpKind : uint8_t {
  kCopy,       // dtype conversion / packing copy: f32 <-> f16/bf16, f32 -> q8_0/q4_0/q4_1, any -> f32
  kMatMul,
  kGetRows,    // embedding lookup
  kRmsNorm,
  kLayerNorm,
  kRope,
  kSoftmax,
  kSilu,
  kGelu,
  kSwiGlu,
  kAdd,
  kMul,
  kScale,
  kAttention,
};

// What SupportsOp is asked: the op and the dtype of its main operand (the weight for MatMul and
// GetRows, K/V for Attention, the destination for Copy, the input otherwise).
struct OpDesc {
  OpKind kind;
  DType dtype = DType::kF32;
};

enum class RopeLayout : uint8_t {
  kHalves,       // "rotate_half" (Llama/HF): pair i is (x[i], x[i + d/2])
  kInterleaved,  // GPT-J/Huginn: pair i is (x[2i], x[2i+1])
};

enum class RopeScaling : uint8_t {
  kNone,
  kLinear,  // positions divided by `factor`
  kNtk,     // base multiplied by factor^(d/(d-2)) ("NTK-aware")
  kYarn,    // YaRN: per-frequency ramp between interpolation and extrapolation, plus attn factor
};

struct RopeParams {
  RopeLayout layout = RopeLayout::kHalves;
  int n_rot = 0;             // rotated dims per head (even); 0 = the whole head
  float freq_base = 10000.0f;
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.0f;       // scaling factor (> 0)
  // YaRN only (defaults follow the YaRN paper / llama.cpp):
  int original_ctx = 4096;   // context the model was trained with
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  float attn_factor = 1.0f;  // extra multiplier on the magnitude (mscale) of the rotated dims
  Status Validate() const;
};

enum class GeluMode : uint8_t { kErf, kTanh };

struct AttentionParams {
  float scale = 0.0f;  // multiplier on q·k; 0 means 1/sqrt(head_dim)
  bool causal = true;  // local keys: query t sees key s iff s <= t + (n_kv - n_q)
                       // (bottom-right aligned, as with a KV cache)
  // Queries for the memory block, [T, n_head, d] f32 like q (not owned; null or undefined: q).
  // Context memory (specs/memory_modes.md §2) scores memory keys with queries rotated at one
  // constant position, and local keys with the ordinary ones; both enter the same softmax.
  const Tensor* mem_q = nullptr;
  // Per-head memory logit bias ("memory gate"), host floats [n_head] (not owned; null: none):
  // query head h scores memory key j as scale·q·k_j + mem_bias[h]; local keys are unchanged and
  // one softmax still runs over [memory ; local]. All zeros is the same as null. Any backend that
  // cannot apply it must refuse the call (never ignore it).
  const float* mem_bias = nullptr;
  Status Validate() const;
  // Validate() plus mem_bias's values (finite), which need the head count.
  Status Validate(int64_t n_head) const;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // Allocates a contiguous tensor on this backend's device.
  virtual StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) = 0;
  // Copies between host and this device (same dtype and shape; either side may be host).
  virtual Status Transfer(const Tensor& src, Tensor* dst) = 0;
  virtual bool SupportsOp(const OpDesc& op) const = 0;
  // Waits for all queued work on this backend.
  virtual Status Synchronize() = 0;

  // ---- ops (see the file comment for the conventions) ----
  // dst = src converted to dst's dtype (same shape).
  virtual Status Copy(const Tensor& src, Tensor* dst) = 0;
  // out[M, N] = x[M, K] · w[N, K]ᵀ.
  virtual Status MatMul(const Tensor& x, const Tensor& w, Tensor* out) = 0;
  // outs[i] = x · ws[i]ᵀ for weights that share one input (a layer's Q/K/V projections, its gate
  // and up), each as MatMul says; the outputs must not overlap x, the weights or each other. A
  // backend may run them as one dispatch: the CPU backend does at decode (the activations are
  // converted once, and the rows of all the weights are split across its threads together), with
  // results identical to separate MatMul calls. The CPU backend validates every pair before it
  // writes anything; the default (separate MatMul calls after checking counts, shapes, devices,
  // overlaps and SupportsOp) can still fail a backend-specific check after earlier outputs were
  // written.
  virtual Status MatMulShared(const Tensor& x, std::span<const Tensor* const> ws,
                              std::span<Tensor* const> outs);
  // out[T, D] (f32) = table[ids[t], :] for ids: [T] i32, table: [V, D] any dtype.
  // InvalidArgument for an id outside [0, V).
  virtual Status GetRows(const Tensor& table, const Tensor& ids, Tensor* out) = 0;
  // out = x / sqrt(mean(x²) + eps) * weight, per row; weight [D] f32 or undefined (= 1).
  virtual Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor* out) = 0;
  // out = (x - mean) / sqrt(var + eps) * weight + bias, per row; weight/bias [D] f32 or undefined.
  virtual Status LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                           Tensor* out) = 0;
  // x: [T, n_head, head_dim] f32, positions: [T] i32. out may alias x.
  virtual Status Rope(const Tensor& x, const Tensor& positions, const RopeParams& params,
                      Tensor* out) = 0;
  // Row-wise softmax of x * scale (f32).
  virtual Status Softmax(const Tensor& x, float scale, Tensor* out) = 0;
  virtual Status Silu(const Tensor& x, Tensor* out) = 0;
  virtual Status Gelu(const Tensor& x, GeluMode mode, Tensor* out) = 0;
  // out = silu(gate) * up.
  virtual Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor* out) = 0;
  // out = a + b / a * b; b has a's shape or is a single row [D] broadcast over a's rows.
  virtual Status Add(const Tensor& a, const Tensor& b, Tensor* out) = 0;
  virtual Status Mul(const Tensor& a, const Tensor& b, Tensor* out) = 0;
  virtual Status Scale(const Tensor& x, float s, Tensor* out) = 0;
  // Attention with an optional memory block (MemLong retrieval attention):
  //   q: [T, n_head, d] f32;  k: [S, n_head_kv, d], v: [S, n_head_kv, dv] (f32 or f16);
  //   mem_k: [M, n_head_kv, d], mem_v: [M, n_head_kv, dv] (f32 or f16), or undefined;
  //   out: [T, n_head, dv] f32.
  // Each query head h uses kv head h / (n_head / n_head_kv) (grouped-query attention). Every query
  // sees every memory key (no mask); local keys are masked as AttentionParams says; one softmax
  // runs jointly over [memory ; local]. Memory keys are scored with params.mem_q when given
  // (same shape, dtype and layout rules as q), local keys always with q. Computed with
  // online-softmax tiling: no [T, S] scores.
  virtual Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                           const Tensor& mem_v, const AttentionParams& params, Tensor* out) = 0;

  // ---- fused forms of the decode step's op sequences ----
  // Each equals the plain ops it names, run in order, up to the rounding of a reduction's order;
  // a backend that runs them in fewer kernel launches for a step of `n_tokens` rows (the CUDA
  // backend at decode, n_tokens <= 8) says so with FusesDecodeOps(n_tokens), and the model then
  // calls them instead of the sequences. The defaults run the plain ops through a temporary
  // (FusesDecodeOps() false: callers gain nothing, and a large step would hold the temporaries).
  virtual bool FusesDecodeOps(int64_t /*n_tokens*/) const { return false; }
  // The step into a KV cache: q and k rotated in place (Rope with out = the input), then the
  // rotated k copied into k_cache and v into v_cache, converted to their dtype (Copy).
  virtual Status RopeAndStoreKv(const Tensor& positions, const RopeParams& params, Tensor* q,
                                Tensor* k, const Tensor& v, Tensor* k_cache, Tensor* v_cache);
  // out += x · wᵀ (MatMul, then Add into out). out: [M, N] f32, must not overlap x or w.
  virtual Status MatMulAdd(const Tensor& x, const Tensor& w, Tensor* out);
  // outs[i] = RmsNorm(x, norm_weight, eps) · ws[i]ᵀ (RmsNorm, then MatMulShared); the outputs
  // must not overlap x, norm_weight, the weights or each other.
  virtual Status RmsNormMatMulShared(const Tensor& x, const Tensor& norm_weight, float eps,
                                     std::span<const Tensor* const> ws,
                                     std::span<Tensor* const> outs);
  // out += SwiGlu(gate, up) · wᵀ (SwiGlu, MatMul, then Add into out); gate and up [M, K] f32 of
  // one shape; out must not overlap gate, up or w.
  virtual Status SwiGluMatMulAdd(const Tensor& gate, const Tensor& up, const Tensor& w,
                                 Tensor* out);

  // The training ops on this backend's device (train_ops.h), for a trainer that keeps its
  // activations and gradients there. `pool`: worker pool for the CPU kernels (not owned, may be
  // null; device backends ignore it). The returned object borrows the backend, which must outlive
  // it. Unimplemented for a backend without training ops (the default).
  virtual StatusOr<std::unique_ptr<TrainOps>> CreateTrainOps(ThreadPool* pool);
};

// The argument rules every Backend::Transfer shares: both tensors defined, equal dtype and shape,
// and each side on the host or on `backend`'s device, at least one on the device (for the CPU
// backend: both on the host). InvalidArgument naming what is wrong otherwise.
Status CheckTransferArgs(const Backend& backend, const Tensor& src, const Tensor* dst);

// The checks every Backend::MatMulShared shares: as many outputs as weights (at least one), all
// defined, each weight [N, K] of a dtype the backend's MatMul supports with out [M, N] for x
// [M, K] (or [K] and [N]), and no output overlapping x, any weight or another output.
Status CheckMatMulSharedArgs(const Backend& backend, const Tensor& x,
                             std::span<const Tensor* const> ws, std::span<Tensor* const> outs);
// A packed host copy of `t`: Tensor::Contiguous for a host tensor, Backend::Transfer from a tensor
// on `backend`'s device (e.g. a forward's intermediate on a GPU).
StatusOr<Tensor> CopyToHost(Backend& backend, const Tensor& t);
// `t` itself when it is a packed host tensor, else CopyToHost: for reading a tensor's values on
// the host without a copy on the CPU backend (the result may share `t`'s bytes: do not write it).
StatusOr<Tensor> OnHost(Backend& backend, const Tensor& t);
// `t` on `backend`'s device: `t` itself when it already lives there (any host tensor, for the CPU
// backend), else a packed copy made with Backend::Transfer (a host tensor uploaded to a device).
StatusOr<Tensor> ToBackend(Backend& backend, const Tensor& t);

}  // namespace muninn
