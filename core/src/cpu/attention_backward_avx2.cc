// AVX2/FMA instantiation of the training attention's task bodies (attention_backward_kernel.h).
// Only called when CpuFeatures says the CPU has the instructions.
#include "cpu/attention_backward_kernel.h"

namespace muninn::cpu::attn_train {
namespace {
struct Avx2Tag {};
}  // namespace

Kernels Avx2Kernels() { return {ForwardTask<Avx2Tag>, Pass1Task<Avx2Tag>, Pass2Task<Avx2Tag>}; }

}  // namespace muninn::cpu::attn_train
