// Loading a Huginn checkpoint's weights into the Model's sandwich blocks (specs/huginn.md §6).
#include <string>

#include "muninn/core/fp16.h"
#include "muninn/model/model_loader.h"

namespace muninn::model {
namespace {

using R = WeightRole;

// f32 / f16 / bf16 -> f32 copy (norms and biases; RmsNorm and Add take f32).
StatusOr<Tensor> ToF32(const Tensor& t) {
  ASSIGN_OR_RETURN(Tensor src, t.Contiguous());
  if (src.dtype() == DType::kF32) return src;
  ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(DType::kF32, t.shape()));
  const int64_t n = t.numel();
  float* dst = out.data_as<float>();
  if (src.dtype() == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(src.data_as<uint16_t>()[i]);
  } else if (src.dtype() == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(src.data_as<uint16_t>()[i]);
  } else {
    return UnimplementedError("a norm or bias of dtype " + std::string(DTypeName(t.dtype())) +
                              " is not supported (expected f32, f16 or bf16)");
  }
  return out;
}

// An f32 matrix converted to `to` (bf16 or f16) in an owned copy; other dtypes as they are.
StatusOr<Tensor> Convert(const Tensor& t, DType to) {
  if (t.dtype() != DType::kF32 || to == DType::kF32) return t;
  ASSIGN_OR_RETURN(Tensor src, t.Contiguous());
  ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(to, t.shape()));
  const int64_t n = t.numel();
  const float* s = src.data_as<const float>();
  uint16_t* d = out.data_as<uint16_t>();
  if (to == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToBf16(s[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToFp16(s[i]);
  }
  return out;
}

StatusOr<Tensor> Rows(const Tensor& t, int64_t begin, int64_t end) { return t.Slice(0, begin, end); }

}  // namespace

ModelLayout HuginnLayout(const ModelHParams& hp) {
  return ModelLayout::Split(static_cast<int32_t>(hp.n_layer),
                            static_cast<int32_t>(hp.n_layer_prelude),
                            static_cast<int32_t>(hp.n_layer_prelude + hp.n_layer_core),
                            static_cast<int32_t>(hp.n_recurrence));
}

StatusOr<ModelWeights> LoadHuginnWeights(const Checkpoint& ckpt, const ModelHParams& hp,
                                         DType matrix_dtype) {
  if (hp.arch != ModelArch::kHuginn) {
    return InvalidArgumentError("LoadHuginnWeights needs a huginn checkpoint, got " +
                                std::string(ModelArchName(hp.arch)));
  }
  if (matrix_dtype != DType::kF32 && matrix_dtype != DType::kBF16 &&
      matrix_dtype != DType::kF16) {
    return InvalidArgumentError("Huginn weights can be kept as f32 or converted to bf16 / f16");
  }
  RETURN_IF_ERROR(ValidateWeights(ckpt, hp));
  ModelWeights w;
  ASSIGN_OR_RETURN(Tensor embd, GetWeight(ckpt, hp, R::kTokenEmbd));
  ASSIGN_OR_RETURN(w.tok_embd, Convert(embd, matrix_dtype));
  ASSIGN_OR_RETURN(Tensor ln_f, GetWeight(ckpt, hp, R::kOutputNorm));
  ASSIGN_OR_RETURN(w.output_norm, ToF32(ln_f));
  if (hp.tied_embeddings) {
    w.output = w.tok_embd;  // lm_head.weight, if stored, is a duplicate (§6): ignored
  } else {
    ASSIGN_OR_RETURN(Tensor head, GetWeight(ckpt, hp, R::kOutput));
    ASSIGN_OR_RETURN(w.output, Convert(head, matrix_dtype));
  }
  ASSIGN_OR_RETURN(Tensor adapter, GetWeight(ckpt, hp, R::kAdapter));
  ASSIGN_OR_RETURN(w.adapter, Convert(adapter, matrix_dtype));
  const int64_t n_q = hp.n_embd_q(), n_kv = hp.n_embd_kv();
  w.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    l.type = BlockType::kSandwich;
    auto norm = [&](WeightRole role, Tensor* out) -> Status {
      ASSIGN_OR_RETURN(Tensor t, GetWeight(ckpt, hp, role, i));
      ASSIGN_OR_RETURN(*out, ToF32(t));
      return Status::Ok();
    };
    RETURN_IF_ERROR(norm(R::kAttnNorm, &l.attn_norm));
    RETURN_IF_ERROR(norm(R::kAttnPostNorm, &l.attn_post_norm));
    RETURN_IF_ERROR(norm(R::kFfnNorm, &l.ffn_norm));
    RETURN_IF_ERROR(norm(R::kFfnPostNorm, &l.ffn_post_norm));
    ASSIGN_OR_RETURN(Tensor qkv, GetWeight(ckpt, hp, R::kAttnQkv, i));
    ASSIGN_OR_RETURN(l.wqkv, Convert(qkv, matrix_dtype));
    ASSIGN_OR_RETURN(l.wq, Rows(l.wqkv, 0, n_q));
    ASSIGN_OR_RETURN(l.wk, Rows(l.wqkv, n_q, n_q + n_kv));
    ASSIGN_OR_RETURN(l.wv, Rows(l.wqkv, n_q + n_kv, n_q + 2 * n_kv));
    if (hp.qk_bias) {
      ASSIGN_OR_RETURN(Tensor b, GetWeight(ckpt, hp, R::kAttnQkBias, i));  // [2, 1, n_head, hd]
      ASSIGN_OR_RETURN(Tensor bf, ToF32(b));
      ASSIGN_OR_RETURN(Tensor flat, bf.Reshape(Shape{2, n_q}));
      ASSIGN_OR_RETURN(Tensor bq, flat.Slice(0, 0, 1));
      ASSIGN_OR_RETURN(Tensor bk, flat.Slice(0, 1, 2));
      ASSIGN_OR_RETURN(l.q_bias, bq.Reshape(Shape{n_q}));
      ASSIGN_OR_RETURN(l.k_bias, bk.Reshape(Shape{n_kv}));
    }
    ASSIGN_OR_RETURN(Tensor proj, GetWeight(ckpt, hp, R::kAttnOut, i));
    ASSIGN_OR_RETURN(l.wo, Convert(proj, matrix_dtype));
    ASSIGN_OR_RETURN(Tensor fc, GetWeight(ckpt, hp, R::kFfnGateUp, i));
    ASSIGN_OR_RETURN(l.w_gate_up, Convert(fc, matrix_dtype));
    ASSIGN_OR_RETURN(l.w_gate, Rows(l.w_gate_up, 0, hp.n_ff));
    ASSIGN_OR_RETURN(l.w_up, Rows(l.w_gate_up, hp.n_ff, 2 * hp.n_ff));
    ASSIGN_OR_RETURN(Tensor down, GetWeight(ckpt, hp, R::kFfnDown, i));
    ASSIGN_OR_RETURN(l.w_down, Convert(down, matrix_dtype));
  }
  return w;
}

}  // namespace muninn::model
