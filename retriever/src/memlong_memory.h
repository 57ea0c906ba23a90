// Private to retriever/: the MemLong memory of given bank chunks exactly as a LongContextSession's
// retrieval layers read it (LongContextSession::Retrieve): the memory layer's K/V fetched as f32,
// laid out [M, n_head_kv, head_dim], rotated to the positions just before the window under
// kBeforeWindow, handed to every retrieval layer. The training memory sources build their memory
// with it, so training reads what inference reads.
#pragma once

#include <vector>

#include "muninn/core/status.h"
#include "muninn/memory/memory_bank.h"
#include "muninn/model/memory_kv.h"
#include "muninn/retriever/long_context_session.h"

namespace muninn::retriever {

// `ids` in chronological order (ascending). Empty ids give an empty MemoryKV.
StatusOr<model::MemoryKV> MemLongMemoryOf(const LongContextSession& session,
                                          const std::vector<memory::ChunkId>& ids);

}  // namespace muninn::retriever
