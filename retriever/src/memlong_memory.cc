#include "memlong_memory.h"

namespace muninn::retriever {

StatusOr<model::MemoryKV> MemLongMemoryOf(const LongContextSession& session,
                                          const std::vector<memory::ChunkId>& ids) {
  model::MemoryKV memory;
  if (ids.empty()) return memory;
  const LongContextOptions& lo = session.options();
  memory::MemoryBank* bank = session.bank();
  if (bank == nullptr) return FailedPreconditionError("MemLong memory needs the session's bank");
  if (bank->Stats().kv_layers.size() > 1) {
    return FailedPreconditionError("training memory needs a bank holding the memory layer's K/V only");
  }
  ASSIGN_OR_RETURN(memory::FetchedKV kv, bank->FetchKV(ids, DType::kF32));
  // The bank gives [n_head_kv, M, head_dim]; attention wants [M, n_head_kv, head_dim] packed.
  ASSIGN_OR_RETURN(Tensor kt, kv.k.Transpose(0, 1));
  ASSIGN_OR_RETURN(Tensor vt, kv.v.Transpose(0, 1));
  ASSIGN_OR_RETURN(Tensor k, kt.Contiguous());
  ASSIGN_OR_RETURN(Tensor v, vt.Contiguous());
  if (lo.memory_position == MemoryPosition::kBeforeWindow) {
    const model::Model* m = session.model();
    ASSIGN_OR_RETURN(k, model::RotateMemoryKeys(m->BackendReading(lo.retrieval_layers),
                                                m->config().rope, k, -k.dim(0)));
  }
  for (int32_t l : lo.retrieval_layers) {
    if (memory.layers.size() <= static_cast<size_t>(l)) memory.layers.resize(static_cast<size_t>(l) + 1);
    memory.layers[static_cast<size_t>(l)] = model::LayerMemoryKV{k, v};
  }
  return memory;
}

}  // namespace muninn::retriever
