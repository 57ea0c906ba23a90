// AVX-512 (F/BW/VL/DQ) instantiation of the training attention's task bodies
// (attention_backward_kernel.h). Only called when CpuFeatures says the CPU has the instructions.
#include "cpu/attention_backward_kernel.h"

namespace muninn::cpu::attn_train {
namespace {
struct Avx512Tag {};
}  // namespace

Kernels Avx512Kernels() {
  return {ForwardTask<Avx512Tag>, Pass1Task<Avx512Tag>, Pass2Task<Avx512Tag>};
}

}  // namespace muninn::cpu::attn_train
