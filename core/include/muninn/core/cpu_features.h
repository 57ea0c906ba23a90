// CpuFeatures: what the running x86-64 processor supports, read once with CPUID/XGETBV.
// Kernels compiled for AVX2 or AVX-512 are only called when these say the CPU (and the OS's
// saved register state) supports them. Thread-safe (immutable after construction).
#pragma once

#include <string>

namespace muninn {

enum class CpuIsa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;

  // The best kernel family this CPU can run: kAvx2 needs AVX2+FMA+F16C, kAvx512 also needs
  // AVX-512 F/BW/VL/DQ.
  CpuIsa BestIsa() const;
  std::string ToString() const;  // "avx2 fma f16c avx512f ..."
};

// Detected once per process (the result never changes, so this is not mutable state).
const CpuFeatures& GetCpuFeatures();

const char* CpuIsaName(CpuIsa isa);
// Parses "scalar", "avx2", "avx512"; false otherwise.
bool ParseCpuIsa(const std::string& name, CpuIsa* isa);

}  // namespace muninn
