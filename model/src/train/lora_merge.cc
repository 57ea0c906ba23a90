#include "muninn/model/lora_merge.h"

#include <cblas.h>

#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "muninn/core/backward.h"
#include "muninn/core/cpu_backend.h"
#include "muninn/core/dtype.h"
#include "muninn/core/quant.h"
#include "muninn/model/gguf_file.h"
#include "muninn/model/gguf_writer.h"
#include "muninn/model/lora_gguf.h"
#include "muninn/model/model_loader.h"
#include "train/atomic_file.h"

namespace muninn::model {

StatusOr<std::unique_ptr<Model>> MergeLora(const Model& base, const LoraParams& params,
                                           float mult) {
  const ModelConfig& mc = base.config();
  if (!base.backend()->device().is_cpu()) {
    return UnimplementedError("merging a LoRA adapter needs a model on the CPU backend");
  }
  if (!std::isfinite(mult)) return InvalidArgumentError("LoRA scale must be finite");
  const ModelConfig& pc = params.model_config();
  if (pc.n_layer != mc.n_layer || pc.n_embd != mc.n_embd || pc.n_head != mc.n_head ||
      pc.n_head_kv != mc.n_head_kv || pc.head_dim != mc.head_dim || pc.n_ff != mc.n_ff) {
    return InvalidArgumentError("the LoRA adapter was made for a model of other dimensions");
  }
  ModelWeights w = base.weights();  // tensors share their buffers
  const LoraConfig& c = params.config();
  const float scale = mult * c.scale();
  for (int32_t l = c.first_layer; l < mc.n_layer; ++l) {
    LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    Tensor* targets[kNumLoraTargets] = {&lw.wq,     &lw.wk,   &lw.wv,    &lw.wo,
                                        &lw.w_gate, &lw.w_up, &lw.w_down};
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto target = static_cast<LoraTarget>(t);
      const int64_t oa = params.OffsetA(l, target);
      if (oa < 0) continue;
      auto merged = DequantizeToF32(*targets[t]);
      if (!merged.ok()) return merged.status().WithContext("layer " + std::to_string(l));
      const int64_t n_in = params.InDim(target), n_out = params.OutDim(target);
      // W[n_out, n_in] += scale · B[n_out, r] · A[r, n_in]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(n_out),
                  static_cast<blasint>(n_in), static_cast<blasint>(c.rank), scale,
                  params.values().data() + params.OffsetB(l, target), static_cast<blasint>(c.rank),
                  params.values().data() + oa, static_cast<blasint>(n_in), 1.0f,
                  merged->data_as<float>(), static_cast<blasint>(n_in));
      *targets[t] = std::move(merged).value();
    }
    const int64_t on[2] = {params.OffsetAttnNorm(l), params.OffsetFfnNorm(l)};
    Tensor* norms[2] = {&lw.attn_norm, &lw.ffn_norm};
    for (int k = 0; k < 2; ++k) {
      if (on[k] < 0) continue;
      // The norms are not scaled by `mult`: a norm weight is not a low-rank delta.
      ASSIGN_OR_RETURN(Tensor n, Tensor::Empty(DType::kF32, Shape{mc.n_embd}));
      std::memcpy(n.data(), params.values().data() + on[k],
                  static_cast<size_t>(mc.n_embd) * sizeof(float));
      *norms[k] = std::move(n);
    }
    const int64_t og = params.OffsetMemGate(l);
    if (og >= 0) {  // memory gates scale with `mult` like the LoRA delta (0: no gate)
      const float* b = params.values().data() + og;
      lw.mem_bias.assign(b, b + mc.n_head);
      for (float& x : lw.mem_bias) x *= mult;
    }
  }
  return Model::Create(base.backend(), mc, std::move(w), base.layout());
}

bool IsMergeMatrixType(DType dtype) {
  // What muninn quantizes, less the activation formats (llama.cpp has no q8_1/q8_K weights).
  return CanQuantize(dtype) && dtype != DType::kQ8_1 && dtype != DType::kQ8_K;
}

namespace {

// The merged f32 matrix `m` ([n_out, n_in]) as `dtype`, row by row.
StatusOr<Tensor> ConvertMatrix(const Tensor& m, DType dtype, const std::string& name) {
  if (dtype == DType::kF32) return m;
  const int64_t n_in = m.dim(1);
  if (n_in % BlockSize(dtype) != 0) {
    return InvalidArgumentError(name + " has rows of " + std::to_string(n_in) +
                                " values, not whole " + std::string(DTypeName(dtype)) +
                                " blocks of " + std::to_string(BlockSize(dtype)));
  }
  ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(dtype, m.shape()));
  for (int64_t r = 0; r < m.dim(0); ++r) {
    RETURN_IF_ERROR(QuantizeRow(dtype, m.data_as<const float>() + r * n_in,
                                static_cast<char*>(out.data()) + r * out.stride(0), n_in));
  }
  return out;
}

}  // namespace

Status MergeLoraIntoGguf(const std::string& src_gguf, const LoraParams& params, float mult,
                         const std::string& dst_gguf, MergeMatrixType matrix_type) {
  if (matrix_type.kind == MergeMatrixType::kFixed && !IsMergeMatrixType(matrix_type.dtype)) {
    return InvalidArgumentError("merged matrices cannot be written as " +
                                std::string(DTypeName(matrix_type.dtype)) +
                                " (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1 or q8_0)");
  }
  if (params.gates_offset() < params.size()) {
    return UnimplementedError(
        "the adapter has memory gates (memory_gates.safetensors), which a GGUF model file cannot "
        "hold; apply the folder at run time with --lora instead of merging it");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateCpuBackend(CpuBackendOptions{}));
  LoadModelOptions lo;
  lo.load_tokenizer = false;
  ASSIGN_OR_RETURN(LoadedModel base, LoadModel(src_gguf, backend.get(), lo));
  if (base.model->config().architecture != "llama") {
    return UnimplementedError("lora merge supports llama GGUF files");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> merged, MergeLora(*base.model, params, mult));
  // The tensors the adapter changed, by their GGUF names; `matrices`: which of them are matrices.
  std::map<std::string, Tensor> changed;
  std::set<std::string> matrices;
  const LoraConfig& c = params.config();
  for (int32_t l = c.first_layer; l < merged->config().n_layer; ++l) {
    const LayerWeights& lw = merged->weights().layers[static_cast<size_t>(l)];
    const Tensor* mats[kNumLoraTargets] = {&lw.wq,     &lw.wk,   &lw.wv,    &lw.wo,
                                           &lw.w_gate, &lw.w_up, &lw.w_down};
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (params.OffsetA(l, static_cast<LoraTarget>(t)) >= 0) {
        const std::string name = GgufLoraBaseName(l, static_cast<LoraTarget>(t));
        changed[name] = *mats[t];
        matrices.insert(name);
      }
    }
    if (params.OffsetAttnNorm(l) >= 0) {
      changed["blk." + std::to_string(l) + ".attn_norm.weight"] = lw.attn_norm;
    }
    if (params.OffsetFfnNorm(l) >= 0) {
      changed["blk." + std::to_string(l) + ".ffn_norm.weight"] = lw.ffn_norm;
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(src_gguf));
  GgufWriter w(file->version() == 2 ? 2 : 3, file->alignment());
  for (const MetadataEntry& e : file->metadata()) w.SetMetadata(e.key, e.value);
  size_t used = 0;
  for (const TensorInfo& info : file->tensors()) {
    auto it = changed.find(info.name);
    if (it != changed.end()) {
      if (matrices.contains(info.name)) {
        std::optional<DType> type = info.dtype;
        if (matrix_type.kind == MergeMatrixType::kFixed) {
          type = matrix_type.dtype;
        } else if (matrix_type.kind == MergeMatrixType::kAuto && type &&
                   *type != DType::kF32 && *type != DType::kF16 && *type != DType::kBF16) {
          type = DType::kQ8_0;
        }
        if (!type || !IsMergeMatrixType(*type)) {
          return InvalidArgumentError(
              info.name + " is " + (type ? std::string(DTypeName(*type)) : "of another type") +
              " in " + src_gguf + ", which muninn does not quantize; choose a type for the merged "
              "matrices (--type q8_0, q4_1, ... or f32)");
        }
        ASSIGN_OR_RETURN(Tensor m, ConvertMatrix(it->second, *type, info.name));
        RETURN_IF_ERROR(w.AddTensor(info.name, m));
        ++used;
        continue;
      }
      RETURN_IF_ERROR(w.AddTensor(info.name, it->second));
      ++used;
      continue;
    }
    ASSIGN_OR_RETURN(Tensor t, file->GetTensor(info));
    RETURN_IF_ERROR(w.AddTensor(info.name, t));
  }
  if (used != changed.size()) {
    return InvalidArgumentError(src_gguf +
                                " lacks some of the tensors the adapter changes (not a "
                                "llama GGUF with llama.cpp's tensor names?)");
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, w.Serialize());
  return train::WriteFileAtomic(dst_gguf, bytes);
}

}  // namespace muninn::model
