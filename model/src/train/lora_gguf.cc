#include "muninn/model/lora_gguf.h"

#include <vector>

#include "muninn/model/gguf_writer.h"
#include "muninn/model/metadata_value.h"
#include "train/atomic_file.h"
#include "train/qk_order.h"

namespace muninn::model {

std::string GgufLoraBaseName(int32_t layer, LoraTarget target) {
  const char* name = "";
  switch (target) {
    case LoraTarget::kQ:
      name = "attn_q";
      break;
    case LoraTarget::kK:
      name = "attn_k";
      break;
    case LoraTarget::kV:
      name = "attn_v";
      break;
    case LoraTarget::kO:
      name = "attn_output";
      break;
    case LoraTarget::kGate:
      name = "ffn_gate";
      break;
    case LoraTarget::kUp:
      name = "ffn_up";
      break;
    case LoraTarget::kDown:
      name = "ffn_down";
      break;
  }
  return "blk." + std::to_string(layer) + "." + name + ".weight";
}

Status WriteLlamaCppLoraGguf(const LoraParams& params, const std::string& path) {
  const ModelConfig& mc = params.model_config();
  if (mc.architecture != "llama") {
    return UnimplementedError("llama.cpp LoRA export supports llama models, not '" +
                              mc.architecture + "'");
  }
  GgufWriter w;
  w.SetMetadata("general.architecture", MetadataValue::String("llama"));
  w.SetMetadata("general.type", MetadataValue::String("adapter"));
  w.SetMetadata("adapter.type", MetadataValue::String("lora"));
  w.SetMetadata("adapter.lora.alpha", MetadataValue::F32(params.config().alpha));
  for (const LoraTensor& t : params.tensors()) {
    // llama.cpp has no per-head memory logit bias: the memory gates stay out of this file.
    if (t.kind == LoraTensor::Kind::kMemGate) continue;
    const float* v = params.values().data() + t.offset;
    std::vector<float> values(v, v + t.size());
    std::string name;
    Shape shape{t.rows, t.cols};
    switch (t.kind) {
      case LoraTensor::Kind::kLoraA:
        name = GgufLoraBaseName(t.layer, t.target) + ".lora_a";
        break;
      case LoraTensor::Kind::kLoraB:
        name = GgufLoraBaseName(t.layer, t.target) + ".lora_b";
        if (!train::PermutedQk(mc) && (t.target == LoraTarget::kQ || t.target == LoraTarget::kK)) {
          train::PermuteHeadRows(values.data(), train::QkHeads(mc, t.target), mc.head_dim, t.cols,
                                 /*gguf_to_hf=*/false);
        }
        break;
      case LoraTensor::Kind::kAttnNorm:
        name = "blk." + std::to_string(t.layer) + ".attn_norm.weight";
        shape = Shape{t.cols};
        break;
      case LoraTensor::Kind::kFfnNorm:
        name = "blk." + std::to_string(t.layer) + ".ffn_norm.weight";
        shape = Shape{t.cols};
        break;
      case LoraTensor::Kind::kMemGate:
        break;  // skipped above
    }
    ASSIGN_OR_RETURN(Tensor tensor, Tensor::FromVector(shape, values));
    RETURN_IF_ERROR(w.AddTensor(name, tensor));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, w.Serialize());
  return train::WriteFileAtomic(path, bytes);
}

}  // namespace muninn::model
