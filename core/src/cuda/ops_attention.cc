// Attention over [memory ; local] on the CUDA backend: the argument rules of the CPU backend
// (core/src/cpu/attention.cc Validate) with device tensors, plus the kernel's head-dim limit; the
// key-range split is chosen so that decode (T = 1) still fills the GPU.
#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/cuda_checks.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_status.h"
#include "cuda/kernels.h"

namespace muninn::cuda {
namespace {

// kv: a key or value operand (f32, f16, or q8_0 with head dims a multiple of 32); else f32.
Status CheckOperand(const CudaContext& ctx, const Tensor& t, const char* name, bool kv) {
  RETURN_IF_ERROR(CheckOnDevice(t, ctx.device, "Attention", name));
  if (t.ndim() != 3) {
    return InvalidArgumentError(std::string("Attention: ") + name +
                                " must be 3-d [rows, heads, head_dim], got " + t.DebugString());
  }
  const bool dtype_ok = t.dtype() == DType::kF32 ||
                        (kv && (t.dtype() == DType::kF16 || t.dtype() == DType::kQ8_0));
  if (!dtype_ok) {
    return InvalidArgumentError(std::string("Attention: ") + name + " must be f32" +
                                (kv ? ", f16 or q8_0" : "") + ", got " + t.DebugString());
  }
  if (t.dtype() == DType::kQ8_0 && t.dim(2) % 32 != 0) {
    return InvalidArgumentError(std::string("Attention: q8_0 ") + name +
                                " needs a head dim that is a multiple of 32, got " +
                                t.DebugString());
  }
  const int64_t elem = static_cast<int64_t>(GetDTypeInfo(t.dtype()).block_bytes);
  const size_t align = t.dtype() == DType::kQ8_0 ? 2 : static_cast<size_t>(elem);
  if (t.stride(2) != elem || !RowsAligned(t, align)) {
    return InvalidArgumentError(std::string("Attention: ") + name +
                                " must have a packed, aligned innermost dimension, got " +
                                t.DebugString());
  }
  return Status::Ok();
}

AttentionOperand OperandOf(const Tensor& t) {
  return AttentionOperand{static_cast<const char*>(t.data()), t.stride(0), t.stride(1),
                          t.dtype() == DType::kF16, t.dtype() == DType::kQ8_0};
}

// Key ranges per (row, head): enough blocks for the GPU (~4096) without ranges under 128 keys.
int64_t ChooseSplits(int64_t rows, int64_t keys) {
  constexpr int64_t kTargetBlocks = 4096, kMinKeys = 128;
  if (rows >= kTargetBlocks || keys <= kMinKeys) return 1;
  const int64_t want = (kTargetBlocks + rows - 1) / rows;
  return std::clamp<int64_t>(std::min(want, keys / kMinKeys), 1, 65535);
}

}  // namespace

Status AttentionOp(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& mem_k, const Tensor& mem_v, const AttentionParams& p,
                   Tensor* out) {
  if (out == nullptr) return InvalidArgumentError("Attention: out is null");
  RETURN_IF_ERROR(CheckOperand(ctx, q, "q", false));
  RETURN_IF_ERROR(CheckOperand(ctx, k, "k", true));
  RETURN_IF_ERROR(CheckOperand(ctx, v, "v", true));
  RETURN_IF_ERROR(CheckOperand(ctx, *out, "out", false));
  AttentionLaunch a;
  a.T = q.dim(0);
  a.n_head = q.dim(1);
  a.d = q.dim(2);
  a.S = k.dim(0);
  a.n_head_kv = k.dim(1);
  a.dv = v.dim(2);
  const std::string shapes = " (q " + q.shape().ToString() + ", k " + k.shape().ToString() +
                             ", v " + v.shape().ToString() + ")";
  if (a.n_head < 1 || a.n_head_kv < 1 || a.d < 1 || a.dv < 1) {
    return InvalidArgumentError("Attention: head counts and head dims must be >= 1" + shapes);
  }
  RETURN_IF_ERROR(p.Validate(a.n_head));
  if (p.mem_bias != nullptr && a.n_head > kAttnMaxBiasHeads) {
    return InvalidArgumentError("Attention: the CUDA kernel supports a per-head memory logit bias "
                                "(mem_bias) for up to " + std::to_string(kAttnMaxBiasHeads) +
                                " query heads, got " + std::to_string(a.n_head) +
                                "; run this layer on the CPU backend");
  }
  if (k.dim(2) != a.d) return InvalidArgumentError("Attention: k's head_dim differs from q's" + shapes);
  if (v.dim(0) != a.S || v.dim(1) != a.n_head_kv) {
    return InvalidArgumentError("Attention: v must have k's rows and heads" + shapes);
  }
  if (a.n_head % a.n_head_kv != 0) {
    return InvalidArgumentError("Attention: n_head must be a multiple of n_head_kv" + shapes);
  }
  if (a.d > kAttnMaxHeadDim || a.dv > kAttnMaxHeadDim) {
    return InvalidArgumentError("Attention: the CUDA kernel supports head dims up to " +
                                std::to_string(kAttnMaxHeadDim) + shapes);
  }
  if (mem_k.defined() != mem_v.defined()) {
    return InvalidArgumentError("Attention: mem_k and mem_v must both be given or both undefined");
  }
  if (mem_k.defined()) {
    RETURN_IF_ERROR(CheckOperand(ctx, mem_k, "mem_k", true));
    RETURN_IF_ERROR(CheckOperand(ctx, mem_v, "mem_v", true));
    a.M = mem_k.dim(0);
    if (mem_v.dim(0) != a.M || mem_k.dim(1) != a.n_head_kv || mem_v.dim(1) != a.n_head_kv ||
        mem_k.dim(2) != a.d || mem_v.dim(2) != a.dv) {
      return InvalidArgumentError("Attention: memory block must be mem_k [M, n_head_kv, d] and "
                                  "mem_v [M, n_head_kv, dv], got mem_k " +
                                  mem_k.shape().ToString() + ", mem_v " +
                                  mem_v.shape().ToString() + shapes);
    }
  }
  const Tensor* mem_q = p.mem_q != nullptr && p.mem_q->defined() ? p.mem_q : nullptr;
  if (mem_q != nullptr) {
    RETURN_IF_ERROR(CheckOperand(ctx, *mem_q, "mem_q", false));
    if (!(mem_q->shape() == q.shape())) {
      return InvalidArgumentError("Attention: mem_q (the memory block's queries) must have q's "
                                  "shape " + q.shape().ToString() + ", got " +
                                  mem_q->shape().ToString());
    }
    if (Overlaps(*out, *mem_q)) return InvalidArgumentError("Attention: out must not overlap mem_q");
  }
  if (!(out->shape() == Shape{a.T, a.n_head, a.dv})) {
    return InvalidArgumentError("Attention: out must be [T, n_head, dv] = " +
                                Shape{a.T, a.n_head, a.dv}.ToString() + ", got " +
                                out->shape().ToString());
  }
  if (p.causal && a.T > a.S) {
    return InvalidArgumentError("Attention: causal attention needs T <= S (the queries are the "
                                "last T of the S local positions), got T = " +
                                std::to_string(a.T) + ", S = " + std::to_string(a.S));
  }
  if (a.T > 0 && a.S + a.M == 0) {
    return InvalidArgumentError("Attention: no keys to attend to (S = 0 and no memory block)");
  }
  for (const Tensor* in : {&q, &k, &v, &mem_k, &mem_v}) {
    if (Overlaps(*out, *in)) {
      return InvalidArgumentError("Attention: out must not overlap q, k, v or the memory block");
    }
  }
  if (a.T == 0) return Status::Ok();

  a.q = OperandOf(q);
  a.mem_q = mem_q != nullptr ? OperandOf(*mem_q) : a.q;
  a.k = OperandOf(k);
  a.v = OperandOf(v);
  if (mem_k.defined()) {
    a.mem_k = OperandOf(mem_k);
    a.mem_v = OperandOf(mem_v);
  }
  a.out = static_cast<char*>(out->data());
  a.out_s0 = out->stride(0);
  a.out_s1 = out->stride(1);
  a.scale = p.scale > 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(a.d));
  a.causal = p.causal;
  a.tensor_cores = ctx.tensor_core_attention;
  if (p.mem_bias != nullptr) {
    a.has_mem_bias = true;
    std::copy(p.mem_bias, p.mem_bias + a.n_head, a.mem_bias);
  }
  const int64_t keys = a.M + a.S;
  if (AttentionUsesGqaDecode(a)) {
    // Ranges of whole chunks, about two blocks per multiprocessor over the KV heads.
    const int64_t chunks = (keys + kGqaChunk - 1) / kGqaChunk;
    const int64_t want = (2 * ctx.sm_count + a.n_head_kv - 1) / a.n_head_kv;
    const int64_t n = std::clamp<int64_t>(want, 1, std::min<int64_t>(chunks, 65535));
    a.split_keys = (chunks + n - 1) / n * kGqaChunk;
  } else if (AttentionUsesTiles(a.T, a.d, a.dv)) {
    // Query tiles of kTiledRows x heads blocks; key ranges (whole key tiles, at least 8 of them)
    // until there are about two blocks per multiprocessor.
    const int64_t blocks = (a.T + kTiledRows - 1) / kTiledRows * a.n_head;
    const int64_t tiles = (keys + kTiledKeys - 1) / kTiledKeys;
    const int64_t want = (2 * ctx.sm_count + blocks - 1) / blocks;
    const int64_t n = std::clamp<int64_t>(std::min(want, tiles / 8), 1, 65535);
    a.split_keys = (tiles + n - 1) / n * kTiledKeys;
  } else {
    const int64_t n = ChooseSplits(a.T * a.n_head, keys);
    a.split_keys = (keys + n - 1) / n;
  }
  a.n_split = (keys + a.split_keys - 1) / a.split_keys;
  Tensor partial;
  const int64_t floats = AttentionPartialFloats(a.T, a.n_head, a.n_split, a.dv);
  if (floats > 0) {
    ASSIGN_OR_RETURN(partial, ctx.Empty(DType::kF32, Shape{floats}));
    a.partial = partial.data_as<float>();
  }
  return CudaStatus(LaunchAttention(a, ctx.stream), "Attention kernel");
}

}  // namespace muninn::cuda
