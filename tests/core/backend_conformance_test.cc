// Op conformance: every Backend op on every available backend against float64 references (and,
// for a non-CPU backend, against the CPU backend's own output), with shapes and dtypes as in the
// default model (SmolLM2-135M: n_embd 576, 9 heads / 3 KV heads, head_dim 64, ff 1536, vocab
// 49152) plus odd sizes. Errors are normalised MSEs with a bound per op (and per dtype).
//
// Test suites:
//   BackendConformance.*     the CPU backends (scalar reference kernels and the best ISA);
//   BackendConformanceGpu.*  the CUDA backend (ctest label `gpu`); skips, saying so, only when no
//                            CUDA device is present or muninn was built without MUNINN_CUDA;
//   BackendConformance.WrongReferencesFail checks that the bounds reject a flawed reference, so the
//                            suite cannot pass vacuously.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "muninn/core/cpu_backend.h"
#include "muninn/core/fp16.h"
#include "muninn/core/quant.h"
#include "tests/core/cuda_test_util.h"
#include "tests/core/quant_test_util.h"
#if defined(MUNINN_HAVE_CUDA)
#include "muninn/core/cuda_backend.h"
#endif

namespace muninn {
namespace {

using testing::RandomMatrix;
using testing::RowAsFloat;

// ---- backends ----------------------------------------------------------------------------------

std::vector<std::unique_ptr<Backend>> CpuBackends() {
  std::vector<std::unique_ptr<Backend>> out;
  CpuBackendOptions scalar;
  scalar.isa = CpuIsa::kScalar;
  out.push_back(CreateCpuBackend(scalar).value());
  if (GetCpuFeatures().BestIsa() != CpuIsa::kScalar) out.push_back(CreateCpuBackend({}).value());
  return out;
}

// The CPU backend every other backend is compared with.
Backend& CpuReference() {
  static std::unique_ptr<Backend> cpu = CreateCpuBackend({}).value();
  return *cpu;
}

using muninn::testing::CudaBackendOrNull;

// ---- tensors -----------------------------------------------------------------------------------

// A copy of host tensor `t` on `be`'s device (packed).
Tensor On(Backend& be, const Tensor& t) {
  Tensor host = t.is_contiguous() ? t : t.Contiguous().value();
  if (be.device().is_cpu()) return host;
  Tensor dev = be.Allocate(t.dtype(), t.shape()).value();
  const Status s = be.Transfer(host, &dev);
  EXPECT_TRUE(s.ok()) << s;
  return dev;
}

// The f32 values of a tensor on `be`'s device.
std::vector<float> ToHost(Backend& be, const Tensor& t) {
  Tensor host = t;
  if (!t.device().is_cpu()) {
    host = Tensor::Empty(t.dtype(), t.shape()).value();
    const Status s = be.Transfer(t, &host);
    EXPECT_TRUE(s.ok()) << s;
  }
  const float* p = host.data_as<const float>();
  return std::vector<float>(p, p + host.numel());
}

Tensor Out(Backend& be, const Shape& shape) { return be.Allocate(DType::kF32, shape).value(); }

Tensor Host(const Shape& shape, const std::vector<float>& v) {
  return Tensor::FromVector(shape, v).value();
}

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty(DType::kI32, Shape{static_cast<int64_t>(v.size())}).value();
  std::copy(v.begin(), v.end(), t.data_as<int32_t>());
  return t;
}

std::vector<float> Random(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// Rounds values through a 16-bit float (what an f16 / bf16 operand holds).
std::vector<float> RoundF16(std::vector<float> v) {
  for (float& x : v) x = Fp16ToFp32(Fp32ToFp16(x));
  return v;
}

// The values a q8_0 row of `cols` holds for `v` (rows of `cols` quantized and dequantized).
std::vector<float> RoundQ8_0(std::vector<float> v, int64_t cols) {
  std::vector<uint8_t> block(static_cast<size_t>(*RowBytes(DType::kQ8_0, cols)));
  for (size_t r = 0; r + static_cast<size_t>(cols) <= v.size(); r += static_cast<size_t>(cols)) {
    EXPECT_TRUE(QuantizeRow(DType::kQ8_0, v.data() + r, block.data(), cols).ok());
    DequantizeRow(DType::kQ8_0, block.data(), v.data() + r, cols);
  }
  return v;
}

Tensor ToDType(const Tensor& f32, DType dtype) {
  if (dtype == DType::kF32) return f32;
  Tensor t = Tensor::Empty(dtype, f32.shape()).value();
  const int64_t cols = f32.dim(-1), rows = f32.numel() / std::max<int64_t>(cols, 1);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_TRUE(QuantizeRow(dtype, f32.data_as<const float>() + r * cols,
                            static_cast<char*>(t.data()) + *RowBytes(dtype, cols) * r, cols)
                    .ok());
  }
  return t;
}

// ---- comparison --------------------------------------------------------------------------------

// sum (got - ref)^2 / denom, denom = sum ref^2 unless given.
double Nmse(const std::vector<float>& got, const std::vector<double>& ref, double denom = -1.0) {
  EXPECT_EQ(got.size(), ref.size());
  double err = 0.0, sq = 0.0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    err += std::isfinite(d) ? d * d : 1e300;
    sq += ref[i] * ref[i];
  }
  if (denom < 0.0) denom = sq;
  return err / std::max(denom, 1e-300);
}

std::vector<double> AsDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

using RunOp = std::function<std::vector<float>(Backend&)>;

// Runs `run` on `be` and checks it against `ref` (and, off the CPU, against the CPU backend's
// result: both within `bound` of the reference means within 4 * bound of each other).
void Verify(Backend& be, const RunOp& run, const std::vector<double>& ref, double bound,
            const std::string& what, double denom = -1.0) {
  SCOPED_TRACE(what + " on " + be.name());
  const std::vector<float> got = run(be);
  const double nmse = Nmse(got, ref, denom);
  EXPECT_LE(nmse, bound) << what << ": normalised MSE vs float64 reference";
  if (!be.device().is_cpu()) {
    const std::vector<float> cpu = run(CpuReference());
    const double vs_cpu = Nmse(got, AsDouble(cpu), denom);
    EXPECT_LE(vs_cpu, 4.0 * bound) << what << ": normalised MSE vs the CPU backend";
  }
}

// ---- float64 references ------------------------------------------------------------------------

// out[m, n] = sum_k x[m, k] w[n, k] with w given as f32 rows and x as f32 or float64 (an
// activation computed in float64); denom (for Nmse) = sum (x w)^2.
template <typename T>
std::vector<double> RefMatMul(const std::vector<T>& x, const std::vector<std::vector<float>>& w,
                              int64_t m, int64_t k, double* denom) {
  const int64_t n = static_cast<int64_t>(w.size());
  std::vector<double> out(static_cast<size_t>(m * n));
  // Two partial sums each, in locals (one chain of dependent additions, or a sum kept through
  // `denom`, would leave the loop latency-bound).
  double sq0 = 0.0, sq1 = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const T* xr = x.data() + i * k;
    for (int64_t j = 0; j < n; ++j) {
      const float* wr = w[j].data();
      double s0 = 0.0, s1 = 0.0;
      int64_t c = 0;
      for (; c + 1 < k; c += 2) {
        const double p0 = static_cast<double>(xr[c]) * wr[c];
        const double p1 = static_cast<double>(xr[c + 1]) * wr[c + 1];
        s0 += p0;
        s1 += p1;
        sq0 += p0 * p0;
        sq1 += p1 * p1;
      }
      if (c < k) {
        const double p = static_cast<double>(xr[c]) * wr[c];
        s0 += p;
        sq0 += p * p;
      }
      out[i * n + j] = s0 + s1;
    }
  }
  *denom = sq0 + sq1;
  return out;
}

std::vector<double> RefRmsNorm(const std::vector<float>& x, const std::vector<float>& w,
                               int64_t d, double eps) {
  std::vector<double> out(x.size());
  for (size_t r = 0; r < x.size() / d; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[r * d + i]) * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t i = 0; i < d; ++i) out[r * d + i] = x[r * d + i] * inv * (w.empty() ? 1.0 : w[i]);
  }
  return out;
}

// RoPE with the plain (unscaled) frequency plan. `interleaved` picks the pair layout.
std::vector<double> RefRope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                            int64_t n_head, int64_t hd, int64_t n_rot, double base,
                            bool interleaved) {
  std::vector<double> out(x.begin(), x.end());
  const int64_t half = n_rot / 2;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const size_t o = (t * n_head + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const double ang = pos[t] * std::pow(base, -2.0 * i / static_cast<double>(n_rot));
        const double c = std::cos(ang), s = std::sin(ang);
        const size_t a = interleaved ? o + 2 * i : o + i;
        const size_t b = interleaved ? o + 2 * i + 1 : o + i + half;
        out[a] = x[a] * c - static_cast<double>(x[b]) * s;
        out[b] = x[b] * c + static_cast<double>(x[a]) * s;
      }
    }
  }
  return out;
}

// Attention over [memory ; local] with one softmax (Backend::Attention's contract).
struct AttnCase {
  int64_t T, S, M, n_head, n_head_kv, d, dv;
  bool causal;
  bool mem_q;
  DType kv_dtype;
};

struct AttnData {
  std::vector<float> q, mq, k, v, mk, mv;  // k/v/mk/mv already rounded to kv_dtype
  std::vector<float> mb;  // [n_head] memory logit bias (AttentionParams::mem_bias), or empty
};

std::vector<double> RefAttention(const AttnCase& c, const AttnData& x, bool with_memory = true) {
  std::vector<double> out(static_cast<size_t>(c.T * c.n_head * c.dv));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const int64_t group = c.n_head / c.n_head_kv;
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t h = 0; h < c.n_head; ++h) {
      const int64_t g = h / group;
      std::vector<double> s;
      std::vector<const float*> vals;
      const float* qr = &x.q[(t * c.n_head + h) * c.d];
      const float* mqr = c.mem_q ? &x.mq[(t * c.n_head + h) * c.d] : qr;
      for (int64_t j = 0; with_memory && j < c.M; ++j) {
        double dot = 0.0;
        for (int64_t i = 0; i < c.d; ++i) dot += static_cast<double>(mqr[i]) * x.mk[(j * c.n_head_kv + g) * c.d + i];
        s.push_back(dot * scale + (x.mb.empty() ? 0.0 : x.mb[h]));
        vals.push_back(&x.mv[(j * c.n_head_kv + g) * c.dv]);
      }
      const int64_t limit = c.causal ? t + (c.S - c.T) + 1 : c.S;
      for (int64_t j = 0; j < limit; ++j) {
        double dot = 0.0;
        for (int64_t i = 0; i < c.d; ++i) dot += static_cast<double>(qr[i]) * x.k[(j * c.n_head_kv + g) * c.d + i];
        s.push_back(dot * scale);
        vals.push_back(&x.v[(j * c.n_head_kv + g) * c.dv]);
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double l = 0.0;
      for (double& e : s) l += (e = std::exp(e - mx));
      for (int64_t i = 0; i < c.dv; ++i) {
        double acc = 0.0;
        for (size_t j = 0; j < s.size(); ++j) acc += s[j] * vals[j][i];
        out[(t * c.n_head + h) * c.dv + i] = acc / l;
      }
    }
  }
  return out;
}

// ---- the checks, one per op --------------------------------------------------------------------

// Weight dtypes every backend under test supports for MatMul / GetRows.
const std::vector<DType> kWeightDTypes = {DType::kF32,  DType::kF16,  DType::kBF16,
                                          DType::kQ4_0, DType::kQ4_1, DType::kQ5_0,
                                          DType::kQ5_1, DType::kQ8_0, DType::kQ4_K,
                                          DType::kQ5_K, DType::kQ6_K};

// MatMul bounds: f32 products; 16-bit weights add the activations' rounding to f16/bf16 on a GPU
// GEMM path (~1e-7 / ~1e-5 relative variance); block formats on the CPU quantize activations to
// 8 bits (~3e-5 .. 6e-5 of the variance, matmul_test.cc), hence the bounds with ~6x headroom.
double MatMulBound(DType w) {
  switch (w) {
    case DType::kF32: return 1e-10;
    case DType::kF16: return 1e-5;
    case DType::kBF16: return 1e-4;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: return 4e-4;
    default: return 2.5e-4;
  }
}

struct MatMulShape {
  int64_t m, n, k;
};

// K rounded up to a whole block (576 is no multiple of the K-quants' 256: such rows use other
// formats in real GGUF files).
int64_t LegalK(DType wt, int64_t k) { return (k + BlockSize(wt) - 1) / BlockSize(wt) * BlockSize(wt); }

void CheckMatMul(Backend& be, DType wt, MatMulShape sh, uint32_t seed) {
  if (!be.SupportsOp({OpKind::kMatMul, wt})) return;
  sh.k = LegalK(wt, sh.k);
  std::mt19937 rng(seed);
  const Tensor w = RandomMatrix(wt, sh.n, sh.k, 0, rng);
  std::vector<std::vector<float>> wf;
  for (int64_t r = 0; r < sh.n; ++r) wf.push_back(RowAsFloat(w, r));
  const std::vector<float> x = Random(sh.m * sh.k, rng);
  double denom = 0.0;
  const std::vector<double> ref = RefMatMul(x, wf, sh.m, sh.k, &denom);
  RunOp run = [&](Backend& b) {
    const Tensor xd = On(b, Host({sh.m, sh.k}, x));
    const Tensor wd = On(b, w);
    Tensor out = Out(b, {sh.m, sh.n});
    EXPECT_TRUE(b.MatMul(xd, wd, &out).ok());
    return ToHost(b, out);
  };
  Verify(be, run, ref, MatMulBound(wt),
         "MatMul " + std::string(DTypeName(wt)) + " [" + std::to_string(sh.m) + ", " +
             std::to_string(sh.k) + "] x [" + std::to_string(sh.n) + ", " + std::to_string(sh.k) +
             "]^T",
         denom);
}

void CheckAllMatMul(Backend& be) {
  // Model shapes: attention q/o (576 -> 576), k/v (576 -> 192), ffn (576 -> 1536, 1536 -> 576),
  // for decode (M = 1), a short prompt (M = 7) and prefill (M = 33, the GEMM path on a GPU).
  const std::vector<MatMulShape> model = {{1, 576, 576},  {1, 192, 576},  {7, 1536, 576},
                                          {33, 576, 1536}, {33, 192, 576}, {9, 1536, 576}};
  uint32_t seed = 1;
  for (DType wt : kWeightDTypes) {
    for (const MatMulShape& s : model) CheckMatMul(be, wt, s, seed++);
    // Odd sizes: N and M not multiples of anything; K the smallest legal for the block format.
    const int64_t k_odd = IsQuantized(wt) ? (BlockSize(wt) == 256 ? 512 : 96) : 37;
    CheckMatMul(be, wt, {5, 13, k_odd}, seed++);
    CheckMatMul(be, wt, {17, 3, k_odd}, seed++);
    // A long row (many blocks per lane on the GPU's decode kernels), two activation rows.
    CheckMatMul(be, wt, {2, 37, 4096}, seed++);
  }
}

// MatMulShared with the model's Q/K/V (576 -> 576, 192, 192) and gate/up (576 -> 1536, 1536)
// weights on one input, for decode (M = 1, the CPU's fused dispatch) and a batch (M = 9), plus
// mixed dtypes (each weight as MatMul computes it): every output against its float64 reference.
void CheckMatMulShared(Backend& be) {
  struct Run {
    std::vector<DType> dtypes;
    std::vector<int64_t> ns;
    int64_t m;
  };
  std::vector<Run> runs;
  for (DType wt : kWeightDTypes) {
    for (int64_t m : {1, 9}) {
      runs.push_back({{wt, wt, wt}, {576, 192, 192}, m});
      runs.push_back({{wt, wt}, {1536, 1536}, m});
    }
  }
  runs.push_back({{DType::kQ4_1, DType::kQ8_0, DType::kF16}, {576, 192, 193}, 1});
  uint32_t seed = 500;
  for (const Run& run : runs) {
    bool supported = true;
    int64_t k = 576;
    for (DType wt : run.dtypes) {
      supported = supported && be.SupportsOp({OpKind::kMatMul, wt});
      k = std::max(k, LegalK(wt, 576));
    }
    if (!supported) continue;
    std::mt19937 rng(seed++);
    std::vector<Tensor> ws;
    std::vector<std::vector<std::vector<float>>> wf(run.dtypes.size());
    for (size_t i = 0; i < run.dtypes.size(); ++i) {
      ws.push_back(RandomMatrix(run.dtypes[i], run.ns[i], k, 0, rng));
      for (int64_t r = 0; r < run.ns[i]; ++r) wf[i].push_back(RowAsFloat(ws[i], r));
    }
    const std::vector<float> x = Random(run.m * k, rng);
    for (size_t i = 0; i < ws.size(); ++i) {
      double denom = 0.0;
      const std::vector<double> ref = RefMatMul(x, wf[i], run.m, k, &denom);
      RunOp op = [&](Backend& b) {
        const Tensor xd = On(b, Host({run.m, k}, x));
        std::vector<Tensor> wd, outs;
        std::vector<const Tensor*> wp;
        std::vector<Tensor*> op_outs;
        for (size_t j = 0; j < ws.size(); ++j) {
          wd.push_back(On(b, ws[j]));
          outs.push_back(Out(b, {run.m, run.ns[j]}));
        }
        for (size_t j = 0; j < ws.size(); ++j) {
          wp.push_back(&wd[j]);
          op_outs.push_back(&outs[j]);
        }
        const Status st = b.MatMulShared(xd, wp, op_outs);
        EXPECT_TRUE(st.ok()) << st;
        return ToHost(b, outs[i]);
      };
      Verify(be, op, ref, MatMulBound(run.dtypes[i]),
             "MatMulShared " + std::string(DTypeName(run.dtypes[i])) + " weight " +
                 std::to_string(i) + " of " + std::to_string(ws.size()) + ", M " +
                 std::to_string(run.m),
             denom);
    }
  }
}

// ---- fused decode ops ----
// MatMulAdd, RmsNormMatMulShared and SwiGluMatMulAdd against float64 references of the op
// sequences they stand for. On the CUDA backend, M <= 8 runs one fused mat×vec kernel and M = 9
// the composition of the plain ops.

// Weight dtypes for the fused ops: the model's block formats, 16- and 32-bit floats and a K-quant.
const std::vector<DType> kFusedDTypes = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0,
                                         DType::kF16,  DType::kF32,  DType::kQ6_K};

// The rows of a 2-d weight as f32.
std::vector<std::vector<float>> WeightRows(const Tensor& w) {
  std::vector<std::vector<float>> rows;
  for (int64_t r = 0; r < w.dim(0); ++r) rows.push_back(RowAsFloat(w, r));
  return rows;
}

// The f32 [m, n] destination of a fused op and its initial values: packed, or (strided) columns
// [n / 2, n / 2 + n) of an [m, 2n] buffer (row stride 2n floats) whose other columns hold random
// values the op must leave alone.
struct FusedDest {
  int64_t m = 0, n = 0;
  bool strided = false;
  std::vector<float> buffer;  // [m, width()], the destination's initial values included

  int64_t width() const { return strided ? 2 * n : n; }
  int64_t first() const { return strided ? n / 2 : 0; }
};

FusedDest MakeFusedDest(int64_t m, int64_t n, bool strided, const std::vector<float>& init,
                        std::mt19937& rng) {
  FusedDest d{m, n, strided, {}};
  d.buffer = Random(m * d.width(), rng);
  for (int64_t r = 0; r < m; ++r) {
    std::copy_n(init.begin() + r * n, n, d.buffer.begin() + r * d.width() + d.first());
  }
  return d;
}

// A destination for the "+=" ops holding a random residual as large as the products (rms
// sqrt(denom / (m n))), so that a result without it, or with it added twice, is off by about
// 100%; the residual is added to `ref`.
FusedDest ResidualDest(int64_t m, int64_t n, bool strided, double denom, std::mt19937& rng,
                       std::vector<double>* ref) {
  const float scale = static_cast<float>(std::sqrt(denom / static_cast<double>(m * n)));
  const std::vector<float> residual = Random(m * n, rng, scale);
  for (size_t i = 0; i < residual.size(); ++i) (*ref)[i] += residual[i];
  return MakeFusedDest(m, n, strided, residual, rng);
}

// The destination's buffer on `b`; *view is the destination within it.
Tensor FusedDestOn(Backend& b, const FusedDest& d, Tensor* view) {
  Tensor buffer = On(b, Host({d.m, d.width()}, d.buffer));
  *view = buffer.Slice(1, d.first(), d.first() + d.n).value();
  return buffer;
}

// The destination's values ([m, n]) after an op, checking that the buffer's other columns kept
// their values.
std::vector<float> ReadFusedDest(Backend& b, const FusedDest& d, const Tensor& buffer) {
  const std::vector<float> all = ToHost(b, buffer);
  std::vector<float> got;
  int64_t touched = 0;
  for (int64_t r = 0; r < d.m; ++r) {
    for (int64_t c = 0; c < d.width(); ++c) {
      const size_t i = static_cast<size_t>(r * d.width() + c);
      if (c >= d.first() && c < d.first() + d.n) {
        got.push_back(all[i]);
      } else if (all[i] != d.buffer[i]) {
        ++touched;
      }
    }
  }
  EXPECT_EQ(touched, 0) << "values outside the destination view changed";
  return got;
}

std::string FusedWhat(const std::string& op, DType wt, int64_t m, int64_t n, int64_t k,
                      bool strided) {
  return op + " " + std::string(DTypeName(wt)) + " [" + std::to_string(m) + ", " +
         std::to_string(k) + "] x [" + std::to_string(n) + ", " + std::to_string(k) + "]^T" +
         (strided ? " into a strided view" : "");
}

// The batch sizes of a fused-op check: 1, 3 and 8 run the CUDA backend's fused decode kernel (8 is
// its most rows), 9 the composition of the plain ops.
const std::vector<int64_t> kFusedRows = {1, 3, 8, 9};

// out += x · wᵀ for a [n, k] weight, x [m, k] and out starting as a residual, for each m in `ms`.
void CheckMatMulAdd(Backend& be, DType wt, int64_t n, int64_t k, const std::vector<int64_t>& ms,
                    bool strided, uint32_t seed) {
  if (!be.SupportsOp({OpKind::kMatMul, wt})) return;
  std::mt19937 rng(seed);
  const Tensor w = RandomMatrix(wt, n, k, 0, rng);
  const std::vector<std::vector<float>> wf = WeightRows(w);
  for (int64_t m : ms) {
    const std::vector<float> x = Random(m * k, rng);
    double denom = 0.0;
    std::vector<double> ref = RefMatMul(x, wf, m, k, &denom);
    const FusedDest dest = ResidualDest(m, n, strided, denom, rng, &ref);
    RunOp run = [&](Backend& b) {
      Tensor out;
      const Tensor buffer = FusedDestOn(b, dest, &out);
      const Status st = b.MatMulAdd(On(b, Host({m, k}, x)), On(b, w), &out);
      EXPECT_TRUE(st.ok()) << st;
      return ReadFusedDest(b, dest, buffer);
    };
    Verify(be, run, ref, MatMulBound(wt), FusedWhat("MatMulAdd", wt, m, n, k, strided), denom);
  }
}

// outs[i] = RmsNorm(x, norm_weight) · ws[i]ᵀ for weights of `ns` rows and x [m, k], m in `ms`: x of
// scale 3 (the norm matters), the norm weight random around 1 or (norm_weight false) undefined,
// the outputs starting as random values (overwritten, never added to); every output against its
// float64 reference.
void CheckRmsNormMatMulShared(Backend& be, DType wt, const std::vector<int64_t>& ns, int64_t k,
                              const std::vector<int64_t>& ms, bool norm_weight, bool strided,
                              uint32_t seed) {
  if (!be.SupportsOp({OpKind::kMatMul, wt})) return;
  std::mt19937 rng(seed);
  std::vector<Tensor> ws;
  std::vector<std::vector<std::vector<float>>> wf;
  for (int64_t n : ns) {
    ws.push_back(RandomMatrix(wt, n, k, 0, rng));
    wf.push_back(WeightRows(ws.back()));
  }
  std::vector<float> nw;
  if (norm_weight) {
    nw = Random(k, rng, 0.25f);
    for (float& v : nw) v += 1.0f;
  }
  const float eps = 1e-5f;
  for (int64_t m : ms) {
    std::vector<FusedDest> dests;
    for (int64_t n : ns) dests.push_back(MakeFusedDest(m, n, strided, Random(m * n, rng), rng));
    const std::vector<float> x = Random(m * k, rng, 3.0f);
    const std::vector<double> normed = RefRmsNorm(x, nw, k, eps);
    // The op runs once per backend; each output is then checked against its own reference.
    std::map<const Backend*, std::vector<std::vector<float>>> results;
    auto outputs = [&](Backend& b) -> const std::vector<std::vector<float>>& {
      if (auto it = results.find(&b); it != results.end()) return it->second;
      const Tensor xd = On(b, Host({m, k}, x));
      const Tensor nwd = norm_weight ? On(b, Host({k}, nw)) : Tensor();
      std::vector<Tensor> wd, buffers, outs(ns.size());
      std::vector<const Tensor*> wp;
      std::vector<Tensor*> op_outs;
      for (size_t j = 0; j < ns.size(); ++j) {
        wd.push_back(On(b, ws[j]));
        buffers.push_back(FusedDestOn(b, dests[j], &outs[j]));
      }
      for (size_t j = 0; j < ns.size(); ++j) {
        wp.push_back(&wd[j]);
        op_outs.push_back(&outs[j]);
      }
      const Status st = b.RmsNormMatMulShared(xd, nwd, eps, wp, op_outs);
      EXPECT_TRUE(st.ok()) << st;
      std::vector<std::vector<float>>& got = results[&b];
      for (size_t j = 0; j < ns.size(); ++j) got.push_back(ReadFusedDest(b, dests[j], buffers[j]));
      return got;
    };
    for (size_t i = 0; i < ns.size(); ++i) {
      double denom = 0.0;
      const std::vector<double> ref = RefMatMul(normed, wf[i], m, k, &denom);
      RunOp op = [&, i](Backend& b) { return outputs(b)[i]; };
      Verify(be, op, ref, MatMulBound(wt),
             FusedWhat("RmsNormMatMulShared", wt, m, ns[i], k, strided) + ", weight " +
                 std::to_string(i) + " of " + std::to_string(ns.size()) +
                 (norm_weight ? "" : ", no norm weight"),
             denom);
    }
  }
}

// SwiGluMatMulAdd's bounds: silu(gate) * up (a product of Gaussians) is heavy-tailed, so the
// 8-bit activation blocks a block-format MatMul uses (scaled by their largest value) lose 3x to 7x
// more of its variance than of a Gaussian's (q6_K's 256-element blocks the most); the float
// formats' rounding is relative and the same as for MatMul.
double SwiGluMatMulBound(DType w) { return (IsQuantized(w) ? 6.0 : 1.0) * MatMulBound(w); }

// out += (silu(gate) * up) · wᵀ for a [n, k] weight, gate and up [m, k] and out starting as a
// residual, for each m in `ms`.
void CheckSwiGluMatMulAdd(Backend& be, DType wt, int64_t n, int64_t k,
                          const std::vector<int64_t>& ms, bool strided, uint32_t seed) {
  if (!be.SupportsOp({OpKind::kMatMul, wt})) return;
  std::mt19937 rng(seed);
  const Tensor w = RandomMatrix(wt, n, k, 0, rng);
  const std::vector<std::vector<float>> wf = WeightRows(w);
  for (int64_t m : ms) {
    const std::vector<float> gate = Random(m * k, rng, 2.0f), up = Random(m * k, rng);
    std::vector<double> act(gate.size());
    for (size_t i = 0; i < act.size(); ++i) {
      const double g = gate[i];
      act[i] = g / (1.0 + std::exp(-g)) * up[i];
    }
    double denom = 0.0;
    std::vector<double> ref = RefMatMul(act, wf, m, k, &denom);
    const FusedDest dest = ResidualDest(m, n, strided, denom, rng, &ref);
    RunOp run = [&](Backend& b) {
      Tensor out;
      const Tensor buffer = FusedDestOn(b, dest, &out);
      const Status st =
          b.SwiGluMatMulAdd(On(b, Host({m, k}, gate)), On(b, Host({m, k}, up)), On(b, w), &out);
      EXPECT_TRUE(st.ok()) << st;
      return ReadFusedDest(b, dest, buffer);
    };
    Verify(be, run, ref, SwiGluMatMulBound(wt), FusedWhat("SwiGluMatMulAdd", wt, m, n, k, strided),
           denom);
  }
}

void CheckFusedDecodeOps(Backend& be) {
  uint32_t seed = 700;
  for (DType wt : kFusedDTypes) {
    // Model shapes (K 576 rounded up to a whole block for the K-quants): Q/K/V and gate/up on the
    // normed input, the attention output and the ffn down projection into the residual. And an
    // odd shape per op: N = 13, K the smallest legal for the block format.
    const int64_t k = LegalK(wt, 576), k_ff = LegalK(wt, 1536);
    const int64_t k_odd = IsQuantized(wt) ? (BlockSize(wt) == 256 ? 512 : 96) : 37;
    CheckRmsNormMatMulShared(be, wt, {576, 192, 192}, k, kFusedRows, true, false, seed++);
    CheckRmsNormMatMulShared(be, wt, {1536, 1536}, k, kFusedRows, true, false, seed++);
    CheckRmsNormMatMulShared(be, wt, {13, 5}, k_odd, kFusedRows, true, false, seed++);
    CheckMatMulAdd(be, wt, 576, k, kFusedRows, false, seed++);
    CheckMatMulAdd(be, wt, 13, k_odd, kFusedRows, false, seed++);
    CheckSwiGluMatMulAdd(be, wt, 576, k_ff, kFusedRows, false, seed++);
    CheckSwiGluMatMulAdd(be, wt, 13, k_odd, kFusedRows, false, seed++);
  }
  // No norm weight (= 1), and destinations that are column slices of wider buffers (row stride
  // 2N floats), fused (M = 3) and composed (M = 9).
  const std::vector<int64_t> ms = {3, 9};
  CheckRmsNormMatMulShared(be, DType::kQ8_0, {576, 192, 192}, 576, ms, false, false, seed++);
  CheckRmsNormMatMulShared(be, DType::kQ8_0, {576, 192, 192}, 576, ms, true, true, seed++);
  CheckMatMulAdd(be, DType::kQ8_0, 576, 576, ms, true, seed++);
  CheckMatMulAdd(be, DType::kF32, 13, 37, ms, true, seed++);
  CheckSwiGluMatMulAdd(be, DType::kQ8_0, 576, 1536, ms, true, seed++);
}

void CheckLmHead(Backend& be) {
  // The tied embedding as output head: [1, 576] x [49152, 576]^T in the model's q8_0 / f16.
  CheckMatMul(be, DType::kQ8_0, {1, 49152, 576}, 101);
  CheckMatMul(be, DType::kF16, {2, 49152, 576}, 102);
}

void CheckGetRows(Backend& be) {
  for (DType wt : kWeightDTypes) {
    if (!be.SupportsOp({OpKind::kGetRows, wt})) continue;
    for (const auto& [v, d0] : std::vector<std::pair<int64_t, int64_t>>{{49152, 576}, {7, 256}}) {
      if (!IsQuantized(wt) && v == 7) continue;
      const int64_t d = LegalK(wt, d0);
      std::mt19937 rng(static_cast<uint32_t>(v + d));
      const Tensor table = RandomMatrix(wt, v, d, 0, rng);
      const std::vector<int32_t> ids = {0, static_cast<int32_t>(v - 1), 3, 3, static_cast<int32_t>(v / 2)};
      std::vector<double> ref;
      for (int32_t id : ids) {
        for (float f : RowAsFloat(table, id)) ref.push_back(f);
      }
      RunOp run = [&](Backend& b) {
        const Tensor td = On(b, table);
        Tensor out = Out(b, {static_cast<int64_t>(ids.size()), d});
        EXPECT_TRUE(b.GetRows(td, On(b, HostI32(ids)), &out).ok());
        return ToHost(b, out);
      };
      Verify(be, run, ref, 1e-14, "GetRows " + std::string(DTypeName(wt)));
    }
  }
  // An id outside the table is an error, on any backend, with host or device ids.
  const Tensor table = On(be, Host({4, 8}, std::vector<float>(32, 1.0f)));
  Tensor out = Out(be, {1, 8});
  EXPECT_FALSE(be.GetRows(table, HostI32({4}), &out).ok());
  EXPECT_FALSE(be.GetRows(table, On(be, HostI32({-1})), &out).ok());
}

void CheckRmsNorm(Backend& be) {
  for (const auto& [rows, d] : std::vector<std::pair<int64_t, int64_t>>{{7, 576}, {1, 576}, {3, 37}}) {
    std::mt19937 rng(static_cast<uint32_t>(rows * d));
    const std::vector<float> x = Random(rows * d, rng, 3.0f), w = Random(d, rng);
    const std::vector<double> ref = RefRmsNorm(x, w, d, 1e-5);
    RunOp run = [&](Backend& b) {
      Tensor out = Out(b, {rows, d});
      EXPECT_TRUE(b.RmsNorm(On(b, Host({rows, d}, x)), On(b, Host({d}, w)), 1e-5f, &out).ok());
      return ToHost(b, out);
    };
    Verify(be, run, ref, 1e-11, "RmsNorm [" + std::to_string(rows) + ", " + std::to_string(d) + "]");
  }
}

void CheckLayerNorm(Backend& be) {
  const int64_t rows = 5, d = 384;
  std::mt19937 rng(7);
  std::vector<float> x = Random(rows * d, rng);
  for (float& v : x) v += 4.0f;  // a mean far from 0
  const std::vector<float> w = Random(d, rng), bias = Random(d, rng);
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < d; ++i) mean += x[r * d + i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
    const double inv = 1.0 / std::sqrt(var / d + 1e-5);
    for (int64_t i = 0; i < d; ++i) ref[r * d + i] = (x[r * d + i] - mean) * inv * w[i] + bias[i];
  }
  RunOp run = [&](Backend& b) {
    Tensor out = Out(b, {rows, d});
    EXPECT_TRUE(b.LayerNorm(On(b, Host({rows, d}, x)), On(b, Host({d}, w)), On(b, Host({d}, bias)),
                            1e-5f, &out)
                    .ok());
    return ToHost(b, out);
  };
  Verify(be, run, ref, 1e-10, "LayerNorm");
}

void CheckRope(Backend& be) {
  struct C {
    int64_t T, n_head, hd, n_rot;
    bool interleaved;
  };
  for (const C& c : {C{7, 9, 64, 0, false}, C{7, 3, 64, 0, true}, C{3, 2, 40, 24, false},
                     C{2, 5, 30, 10, true}}) {
    std::mt19937 rng(static_cast<uint32_t>(c.T * 100 + c.hd));
    const std::vector<float> x = Random(c.T * c.n_head * c.hd, rng);
    std::vector<int32_t> pos;
    for (int64_t t = 0; t < c.T; ++t) pos.push_back(static_cast<int32_t>(t * 613 + 5));
    const int64_t n_rot = c.n_rot == 0 ? c.hd : c.n_rot;
    const std::vector<double> ref = RefRope(x, pos, c.n_head, c.hd, n_rot, 10000.0, c.interleaved);
    RopeParams p;
    p.layout = c.interleaved ? RopeLayout::kInterleaved : RopeLayout::kHalves;
    p.n_rot = static_cast<int>(c.n_rot);
    RunOp run = [&](Backend& b) {
      const Shape sh{c.T, c.n_head, c.hd};
      Tensor out = Out(b, sh);
      EXPECT_TRUE(b.Rope(On(b, Host(sh, x)), HostI32(pos), p, &out).ok());
      return ToHost(b, out);
    };
    Verify(be, run, ref, 1e-11, std::string("Rope ") + (c.interleaved ? "interleaved" : "halves") +
                                    " head_dim " + std::to_string(c.hd));
  }
}

// RopeAndStoreKv (the model's step into its KV cache): q and k rotated in place, the rotated k and
// v stored into slots [offset, offset + T) of caches [cap, n_kv, head_dim] in f16, f32 or q8_0,
// the other slots untouched. Device positions with an f16/f32 cache take the CUDA backend's one
// launch; host positions and q8_0 its plain ops.
void CheckRopeAndStoreKv(Backend& be) {
  struct C {
    int64_t T, n_head, n_kv, hd, n_rot;
    bool interleaved;
    DType cache;
    int64_t cap, offset;
    bool host_positions;
  };
  const C cases[] = {{1, 9, 3, 64, 0, false, DType::kF16, 16, 5, false},
                     {7, 9, 3, 64, 0, false, DType::kF32, 8, 0, false},
                     {3, 4, 2, 40, 24, true, DType::kF16, 6, 2, false},
                     {2, 4, 2, 64, 0, false, DType::kQ8_0, 4, 1, true},
                     {2, 4, 2, 64, 0, true, DType::kF16, 4, 2, true}};
  for (const C& c : cases) {
    if (!be.SupportsOp({OpKind::kCopy, c.cache})) continue;
    std::mt19937 rng(static_cast<uint32_t>(c.T * 1000 + c.hd + c.offset));
    const std::vector<float> q = Random(c.T * c.n_head * c.hd, rng);
    const std::vector<float> k = Random(c.T * c.n_kv * c.hd, rng);
    const std::vector<float> v = Random(c.T * c.n_kv * c.hd, rng);
    const std::vector<float> old_cache = Random(c.cap * c.n_kv * c.hd, rng);
    std::vector<int32_t> pos;
    for (int64_t t = 0; t < c.T; ++t) pos.push_back(static_cast<int32_t>(c.offset + t * 37));
    const int64_t n_rot = c.n_rot == 0 ? c.hd : c.n_rot;
    const std::vector<double> ref_q =
        RefRope(q, pos, c.n_head, c.hd, n_rot, 10000.0, c.interleaved);
    const std::vector<double> ref_k = RefRope(k, pos, c.n_kv, c.hd, n_rot, 10000.0, c.interleaved);
    RopeParams p;
    p.layout = c.interleaved ? RopeLayout::kInterleaved : RopeLayout::kHalves;
    p.n_rot = static_cast<int>(c.n_rot);
    const int64_t slot = c.n_kv * c.hd;  // elements of one cache slot
    // The cache as the backend holds it before the op, read back as f32.
    const std::vector<float> before = c.cache == DType::kF16    ? RoundF16(old_cache)
                                      : c.cache == DType::kQ8_0 ? RoundQ8_0(old_cache, c.hd)
                                                                : old_cache;
    // part 0: q, 1: k, 2: the key cache's slots [offset, offset + T), 3: the value cache's,
    // 4: both caches' other slots.
    const auto run_part = [&](int part) {
      return RunOp([&, part](Backend& b) {
        const Shape qs{c.T, c.n_head, c.hd}, ks{c.T, c.n_kv, c.hd}, cs{c.cap, c.n_kv, c.hd};
        Tensor qd = On(b, Host(qs, q)), kd = On(b, Host(ks, k));
        const Tensor vd = On(b, Host(ks, v));
        Tensor caches[2];
        for (Tensor& cache : caches) {
          cache = b.Allocate(c.cache, cs).value();
          EXPECT_TRUE(b.Copy(On(b, Host(cs, old_cache)), &cache).ok());
        }
        Tensor kc = caches[0].Slice(0, c.offset, c.offset + c.T).value();
        Tensor vc = caches[1].Slice(0, c.offset, c.offset + c.T).value();
        const Tensor positions = c.host_positions ? HostI32(pos) : On(b, HostI32(pos));
        const Status st = b.RopeAndStoreKv(positions, p, &qd, &kd, vd, &kc, &vc);
        EXPECT_TRUE(st.ok()) << st;
        if (part == 0) return ToHost(b, qd);
        if (part == 1) return ToHost(b, kd);
        std::vector<float> whole[2];
        for (int i = 0; i < 2; ++i) {
          Tensor f = Out(b, cs);
          EXPECT_TRUE(b.Copy(caches[i], &f).ok());
          whole[i] = ToHost(b, f);
        }
        const auto first = static_cast<size_t>(c.offset * slot);
        const auto last = static_cast<size_t>((c.offset + c.T) * slot);
        if (part < 4) {
          const std::vector<float>& w = whole[part - 2];
          return std::vector<float>(w.begin() + first, w.begin() + last);
        }
        std::vector<float> rest;
        for (const std::vector<float>& w : whole) {
          rest.insert(rest.end(), w.begin(), w.begin() + first);
          rest.insert(rest.end(), w.begin() + last, w.end());
        }
        return rest;
      });
    };
    const double store_bound = c.cache == DType::kF32   ? 1e-11
                               : c.cache == DType::kF16 ? 1e-6
                                                        : 1e-4;
    std::vector<double> ref_rest;
    for (int i = 0; i < 2; ++i) {
      ref_rest.insert(ref_rest.end(), before.begin(), before.begin() + c.offset * slot);
      ref_rest.insert(ref_rest.end(), before.begin() + (c.offset + c.T) * slot, before.end());
    }
    const std::string what = "RopeAndStoreKv " + std::string(DTypeName(c.cache)) + " cache, T " +
                             std::to_string(c.T) + (c.interleaved ? " interleaved" : " halves") +
                             (c.host_positions ? ", host positions" : "");
    Verify(be, run_part(0), ref_q, 1e-11, what + ": q");
    Verify(be, run_part(1), ref_k, 1e-11, what + ": k");
    Verify(be, run_part(2), ref_k, store_bound, what + ": key cache");
    Verify(be, run_part(3), AsDouble(v), store_bound, what + ": value cache");
    Verify(be, run_part(4), ref_rest, 0.0, what + ": other slots untouched");
  }
}

void CheckSoftmax(Backend& be) {
  for (const auto& [rows, d] : std::vector<std::pair<int64_t, int64_t>>{{9, 49152}, {4, 13}}) {
    std::mt19937 rng(static_cast<uint32_t>(d));
    const std::vector<float> x = Random(rows * d, rng, 4.0f);
    const float scale = 0.7f;
    std::vector<double> ref(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -1e300, sum = 0.0;
      for (int64_t i = 0; i < d; ++i) mx = std::max(mx, static_cast<double>(x[r * d + i]) * scale);
      for (int64_t i = 0; i < d; ++i) sum += std::exp(static_cast<double>(x[r * d + i]) * scale - mx);
      for (int64_t i = 0; i < d; ++i) ref[r * d + i] = std::exp(static_cast<double>(x[r * d + i]) * scale - mx) / sum;
    }
    RunOp run = [&](Backend& b) {
      Tensor out = Out(b, {rows, d});
      EXPECT_TRUE(b.Softmax(On(b, Host({rows, d}, x)), scale, &out).ok());
      return ToHost(b, out);
    };
    Verify(be, run, ref, 1e-11, "Softmax [" + std::to_string(rows) + ", " + std::to_string(d) + "]");
  }
}

void CheckElementwise(Backend& be) {
  for (const auto& [rows, d] : std::vector<std::pair<int64_t, int64_t>>{{7, 1536}, {3, 37}}) {
    std::mt19937 rng(static_cast<uint32_t>(rows + d));
    const std::vector<float> a = Random(rows * d, rng, 3.0f), b = Random(rows * d, rng, 3.0f);
    const std::vector<float> row = Random(d, rng);
    const Shape sh{rows, d};
    auto ref_of = [&](const std::function<double(double, double, int64_t)>& f) {
      std::vector<double> r(a.size());
      for (size_t i = 0; i < a.size(); ++i) r[i] = f(a[i], b[i], static_cast<int64_t>(i) % d);
      return r;
    };
    using Bin = Status (Backend::*)(const Tensor&, const Tensor&, Tensor*);
    auto run_bin = [&](Bin op, bool broadcast) -> RunOp {
      return [&, op, broadcast](Backend& bk) {
        Tensor out = Out(bk, sh);
        const Tensor bd = broadcast ? On(bk, Host({d}, row)) : On(bk, Host(sh, b));
        EXPECT_TRUE((bk.*op)(On(bk, Host(sh, a)), bd, &out).ok());
        return ToHost(bk, out);
      };
    };
    const std::string dims = " [" + std::to_string(rows) + ", " + std::to_string(d) + "]";
    Verify(be, run_bin(&Backend::Add, false), ref_of([](double x, double y, int64_t) { return x + y; }), 1e-14, "Add" + dims);
    Verify(be, run_bin(&Backend::Add, true), ref_of([&](double x, double, int64_t i) { return x + row[i]; }), 1e-14, "Add (row broadcast)" + dims);
    Verify(be, run_bin(&Backend::Mul, false), ref_of([](double x, double y, int64_t) { return x * y; }), 1e-14, "Mul" + dims);
    Verify(be, run_bin(&Backend::Mul, true), ref_of([&](double x, double, int64_t i) { return x * row[i]; }), 1e-14, "Mul (row broadcast)" + dims);
    Verify(be, run_bin(&Backend::SwiGlu, false), ref_of([](double x, double y, int64_t) { return x / (1.0 + std::exp(-x)) * y; }), 1e-12, "SwiGlu" + dims);
    auto run_un = [&](const std::function<Status(Backend&, const Tensor&, Tensor*)>& op) -> RunOp {
      return [&, op](Backend& bk) {
        Tensor out = Out(bk, sh);
        EXPECT_TRUE(op(bk, On(bk, Host(sh, a)), &out).ok());
        return ToHost(bk, out);
      };
    };
    Verify(be, run_un([](Backend& bk, const Tensor& x, Tensor* o) { return bk.Silu(x, o); }),
           ref_of([](double x, double, int64_t) { return x / (1.0 + std::exp(-x)); }), 1e-12, "Silu" + dims);
    Verify(be, run_un([](Backend& bk, const Tensor& x, Tensor* o) { return bk.Gelu(x, GeluMode::kErf, o); }),
           ref_of([](double x, double, int64_t) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }), 1e-12, "Gelu erf" + dims);
    Verify(be, run_un([](Backend& bk, const Tensor& x, Tensor* o) { return bk.Gelu(x, GeluMode::kTanh, o); }),
           ref_of([](double x, double, int64_t) {
             return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
           }), 1e-12, "Gelu tanh" + dims);
    Verify(be, run_un([](Backend& bk, const Tensor& x, Tensor* o) { return bk.Scale(x, -0.37f, o); }),
           ref_of([](double x, double, int64_t) { return x * static_cast<double>(-0.37f); }), 1e-14, "Scale" + dims);
  }
}

void CheckCopy(Backend& be) {
  // Conversions into f32/f16/bf16 from every decodable dtype, and same-dtype copies of
  // strided views (a column slice of a wider matrix).
  for (DType src : kWeightDTypes) {
    for (DType dst : {DType::kF32, DType::kF16, DType::kBF16}) {
      if (!be.SupportsOp({OpKind::kCopy, dst}) || !be.SupportsOp({OpKind::kMatMul, src})) continue;
      std::mt19937 rng(static_cast<uint32_t>(src) * 10 + static_cast<uint32_t>(dst));
      const int64_t rows = 6, cols = 512;
      const Tensor s = RandomMatrix(src, rows, cols, 0, rng);
      std::vector<double> ref;
      for (int64_t r = 0; r < rows; ++r) {
        for (float f : RowAsFloat(s, r)) {
          const float v = dst == DType::kF16 ? Fp16ToFp32(Fp32ToFp16(f))
                          : dst == DType::kBF16 ? Bf16ToFp32(Fp32ToBf16(f)) : f;
          ref.push_back(v);
        }
      }
      RunOp run = [&](Backend& b) {
        Tensor d = b.Allocate(dst, {rows, cols}).value();
        EXPECT_TRUE(b.Copy(On(b, s), &d).ok());
        Tensor f32 = Out(b, {rows, cols});
        EXPECT_TRUE(b.Copy(d, &f32).ok());  // back to f32 (exact for f16/bf16 values)
        return ToHost(b, f32);
      };
      Verify(be, run, ref, 1e-14, "Copy " + std::string(DTypeName(src)) + " -> " + std::string(DTypeName(dst)));
    }
  }
  // f32 -> q8_0 (a quantized KV cache's rows), bit for bit as QuantizeRow: read back as f32.
  if (be.SupportsOp({OpKind::kCopy, DType::kQ8_0})) {
    std::mt19937 qrng(7);
    const int64_t rows = 9, cols = 192;
    const std::vector<float> x = Random(rows * cols, qrng, 3.0f);
    const std::vector<float> want = RoundQ8_0(x, cols);
    RunOp run = [&](Backend& b) {
      Tensor q = b.Allocate(DType::kQ8_0, {rows, cols}).value();
      EXPECT_TRUE(b.Copy(On(b, Host({rows, cols}, x)), &q).ok());
      Tensor f32 = Out(b, {rows, cols});
      EXPECT_TRUE(b.Copy(q, &f32).ok());
      return ToHost(b, f32);
    };
    Verify(be, run, AsDouble(want), 0.0, "Copy f32 -> q8_0");
  }
  std::mt19937 rng(99);
  const std::vector<float> wide = Random(5 * 40, rng);
  std::vector<double> ref;
  for (int64_t r = 0; r < 5; ++r) {
    for (int64_t c = 3; c < 30; ++c) ref.push_back(wide[r * 40 + c]);
  }
  RunOp run = [&](Backend& b) {
    const Tensor src = On(b, Host({5, 40}, wide)).Slice(1, 3, 30).value();
    Tensor out = Out(b, {5, 27});
    EXPECT_TRUE(b.Copy(src, &out).ok());
    return ToHost(b, out);
  };
  Verify(be, run, ref, 0.0, "Copy f32 strided view");
}

// Strided views: rows of x, out and the operands taken as column slices of wider matrices (row
// stride > packed), for the ops whose contract allows them.
void CheckViews(Backend& be) {
  std::mt19937 rng(77);
  const int64_t rows = 9, d = 40, pad = 7;  // views [rows, d] of [rows, d + pad] buffers
  const std::vector<float> a = Random(rows * (d + pad), rng), b = Random(rows * (d + pad), rng);
  auto slice = [&](Backend& bk, const std::vector<float>& v) {
    return On(bk, Host({rows, d + pad}, v)).Slice(1, 0, d).value();
  };
  auto at = [&](const std::vector<float>& v, int64_t r, int64_t c) { return v[r * (d + pad) + c]; };
  auto read_view = [&](Backend& bk, const Tensor& wide) {
    Tensor packed = Out(bk, {rows, d});
    EXPECT_TRUE(bk.Copy(wide.Slice(1, 0, d).value(), &packed).ok());
    return ToHost(bk, packed);
  };
  {
    std::vector<double> ref;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < d; ++c) ref.push_back(static_cast<double>(at(a, r, c)) + at(b, r, c));
    }
    RunOp run = [&](Backend& bk) {
      Tensor wide = Out(bk, {rows, d + pad});
      Tensor out = wide.Slice(1, 0, d).value();
      EXPECT_TRUE(bk.Add(slice(bk, a), slice(bk, b), &out).ok());
      return read_view(bk, wide);
    };
    Verify(be, run, ref, 1e-14, "Add on strided views");
  }
  {
    std::vector<float> packed_a;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < d; ++c) packed_a.push_back(at(a, r, c));
    }
    RunOp run = [&](Backend& bk) {
      Tensor out = Out(bk, {rows, d});
      EXPECT_TRUE(bk.RmsNorm(slice(bk, a), Tensor(), 1e-6f, &out).ok());
      return ToHost(bk, out);
    };
    Verify(be, run, RefRmsNorm(packed_a, {}, d, 1e-6), 1e-11, "RmsNorm on a strided view");
  }
  // MatMul with x and out as strided row views, for decode and GEMM batch sizes.
  for (DType wt : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    if (!be.SupportsOp({OpKind::kMatMul, wt})) continue;
    for (int64_t m : {int64_t{3}, int64_t{20}}) {
      const int64_t k = 64, n = 24;
      const Tensor w = RandomMatrix(wt, n, k, 0, rng);
      std::vector<std::vector<float>> wf;
      for (int64_t r = 0; r < n; ++r) wf.push_back(RowAsFloat(w, r));
      const std::vector<float> xw = Random(m * (k + 32), rng);
      std::vector<float> x;
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t c = 0; c < k; ++c) x.push_back(xw[r * (k + 32) + c]);
      }
      double denom = 0.0;
      const std::vector<double> ref = RefMatMul(x, wf, m, k, &denom);
      RunOp run = [&](Backend& bk) {
        const Tensor xv = On(bk, Host({m, k + 32}, xw)).Slice(1, 0, k).value();
        Tensor wide = Out(bk, {m, n + 5});
        Tensor out = wide.Slice(1, 0, n).value();
        EXPECT_TRUE(bk.MatMul(xv, On(bk, w), &out).ok());
        Tensor packed = Out(bk, {m, n});
        EXPECT_TRUE(bk.Copy(out, &packed).ok());
        return ToHost(bk, packed);
      };
      Verify(be, run, ref, MatMulBound(wt),
             "MatMul " + std::string(DTypeName(wt)) + " on strided views, M " + std::to_string(m),
             denom);
    }
  }
}

// mem_bias: with a per-head memory logit bias (a backend that cannot apply one must refuse it).
void CheckAttentionCase(Backend& be, const AttnCase& c, uint32_t seed, bool mem_bias = false) {
  if (!be.SupportsOp({OpKind::kAttention, c.kv_dtype})) return;
  std::mt19937 rng(seed);
  AttnData x;
  x.q = Random(c.T * c.n_head * c.d, rng);
  x.mq = Random(c.T * c.n_head * c.d, rng);
  x.k = Random(c.S * c.n_head_kv * c.d, rng);
  x.v = Random(c.S * c.n_head_kv * c.dv, rng);
  x.mk = Random(c.M * c.n_head_kv * c.d, rng);
  x.mv = Random(c.M * c.n_head_kv * c.dv, rng);
  if (mem_bias) {
    x.mb = Random(c.n_head, rng, 2.0f);  // large enough to move the memory/local balance
  }
  if (c.kv_dtype == DType::kF16) {
    for (auto* v : {&x.k, &x.v, &x.mk, &x.mv}) *v = RoundF16(*v);
  }
  if (c.kv_dtype == DType::kQ8_0) {  // the values the cache holds
    for (auto* v : {&x.k, &x.mk}) *v = RoundQ8_0(*v, c.d);
    for (auto* v : {&x.v, &x.mv}) *v = RoundQ8_0(*v, c.dv);
  }
  const std::vector<double> ref = RefAttention(c, x);
  RunOp run = [&](Backend& b) {
    const Tensor q = On(b, Host({c.T, c.n_head, c.d}, x.q));
    const Tensor mq = On(b, Host({c.T, c.n_head, c.d}, x.mq));
    const Tensor k = On(b, ToDType(Host({c.S, c.n_head_kv, c.d}, x.k), c.kv_dtype));
    const Tensor v = On(b, ToDType(Host({c.S, c.n_head_kv, c.dv}, x.v), c.kv_dtype));
    Tensor mk, mv;
    if (c.M > 0) {
      mk = On(b, ToDType(Host({c.M, c.n_head_kv, c.d}, x.mk), c.kv_dtype));
      mv = On(b, ToDType(Host({c.M, c.n_head_kv, c.dv}, x.mv), c.kv_dtype));
    }
    AttentionParams p;
    p.causal = c.causal;
    if (c.mem_q) p.mem_q = &mq;
    if (mem_bias) p.mem_bias = x.mb.data();
    Tensor out = Out(b, {c.T, c.n_head, c.dv});
    const Status s = b.Attention(q, k, v, mk, mv, p, &out);
    EXPECT_TRUE(s.ok()) << s;
    return ToHost(b, out);
  };
  Verify(be, run, ref, 1e-10,
         "Attention T " + std::to_string(c.T) + " S " + std::to_string(c.S) + " M " +
             std::to_string(c.M) + " heads " + std::to_string(c.n_head) + "/" +
             std::to_string(c.n_head_kv) + " d " + std::to_string(c.d) + " " +
             std::string(DTypeName(c.kv_dtype)) + (c.causal ? " causal" : "") +
             (c.mem_q ? " mem_q" : "") + (mem_bias ? " mem_bias" : ""));
}

const std::vector<AttnCase> kAttnCases = {
    // The model: decode against a long local cache plus retrieved memory; a prompt; prefill.
    {1, 700, 256, 9, 3, 64, 64, true, false, DType::kF32},
    {1, 700, 256, 9, 3, 64, 64, true, false, DType::kF16},
    {7, 20, 33, 9, 3, 64, 64, true, true, DType::kF32},
    {64, 64, 128, 9, 3, 64, 64, true, false, DType::kF16},
    {5, 12, 0, 9, 3, 64, 64, false, false, DType::kF32},
    // Odd sizes: head dims that are no multiple of 32, MQA, memory only (S = 0).
    {3, 3, 5, 4, 1, 40, 24, true, true, DType::kF32},
    {2, 0, 9, 2, 2, 17, 33, false, false, DType::kF16},
    // Prefill-sized T (the CUDA backend's query-tiled kernel from T = 16): partial tiles, odd
    // head dims, memory only, head dim 128 (more than 48 KiB of shared memory), f32 and f16.
    {37, 50, 21, 4, 2, 40, 24, true, true, DType::kF32},
    {20, 0, 45, 2, 2, 17, 33, false, false, DType::kF16},
    {16, 40, 10, 2, 1, 128, 128, true, true, DType::kF16},
    {100, 300, 0, 9, 3, 64, 64, true, false, DType::kF16},
    // A prompt over a longer cache and memory: on a GPU, query tiles and key ranges merged.
    {40, 700, 100, 9, 3, 64, 64, true, true, DType::kF16},
    // Decode over a long cache: on a GPU, key ranges of several chunks, merged across ranges.
    {2, 12000, 300, 9, 3, 64, 64, true, true, DType::kF16},
    // A q8_0 KV cache (kv_cache: q8_0): decode, a prompt with memory queries, prefill tiles.
    {1, 700, 64, 9, 3, 64, 64, true, false, DType::kQ8_0},
    {7, 40, 32, 9, 3, 64, 64, true, true, DType::kQ8_0},
    {48, 100, 0, 9, 3, 64, 64, true, false, DType::kQ8_0},
};

void CheckAttention(Backend& be) {
  uint32_t seed = 500;
  for (const AttnCase& c : kAttnCases) CheckAttentionCase(be, c, seed++);
  // With a per-head memory logit bias: decode (split keys), a prompt with memory queries, prefill,
  // and a query-tiled case.
  for (const size_t i : {0, 2, 3, 5, 7, 11}) CheckAttentionCase(be, kAttnCases[i], seed++, true);
}

// ---- the tests ---------------------------------------------------------------------------------

// CONFORMANCE_TEST(Name, Fn): BackendConformance.Name on the CPU backends and
// BackendConformanceGpu.Name on the CUDA backend.
#define CONFORMANCE_TEST(Name, Fn)                          \
  TEST(BackendConformance, Name) {                          \
    for (auto& be : CpuBackends()) Fn(*be);                 \
  }                                                         \
  TEST(BackendConformanceGpu, Name) {                       \
    std::string why;                                        \
    std::unique_ptr<Backend> be = CudaBackendOrNull(&why);  \
    if (be == nullptr) GTEST_SKIP() << why;                 \
    Fn(*be);                                                \
  }

CONFORMANCE_TEST(MatMul, CheckAllMatMul)
CONFORMANCE_TEST(MatMulLmHead, CheckLmHead)
CONFORMANCE_TEST(MatMulShared, CheckMatMulShared)
CONFORMANCE_TEST(FusedDecodeOps, CheckFusedDecodeOps)
CONFORMANCE_TEST(GetRows, CheckGetRows)
CONFORMANCE_TEST(RmsNorm, CheckRmsNorm)
CONFORMANCE_TEST(LayerNorm, CheckLayerNorm)
CONFORMANCE_TEST(Rope, CheckRope)
CONFORMANCE_TEST(RopeAndStoreKv, CheckRopeAndStoreKv)
CONFORMANCE_TEST(Softmax, CheckSoftmax)
CONFORMANCE_TEST(Elementwise, CheckElementwise)
CONFORMANCE_TEST(Copy, CheckCopy)
CONFORMANCE_TEST(StridedViews, CheckViews)
CONFORMANCE_TEST(Attention, CheckAttention)

// The CUDA backend's prefill over f16 K/V runs on tensor cores by default (attention_mma.cu); the
// SIMT kernel it replaces for those shapes is still what runs with tensor_core_attention off, so
// both are held to the same bounds.
TEST(BackendConformanceGpu, AttentionWithoutTensorCores) {
#if defined(MUNINN_HAVE_CUDA)
  std::string why;
  if (CudaBackendOrNull(&why) == nullptr) GTEST_SKIP() << why;
  CudaBackendOptions o;
  o.tensor_core_attention = false;
  auto be = CreateCudaBackend(o);
  ASSERT_TRUE(be.ok()) << be.status();
  CheckAttention(**be);
#else
  GTEST_SKIP() << "muninn was built with MUNINN_CUDA=OFF";
#endif
}

// The bounds are tight enough to notice a wrong reference: a flawed float64 reference (a missing
// weight, the other RoPE layout, attention without its memory block, a transposed weight) must
// fail them on the CPU backend.
TEST(BackendConformance, WrongReferencesFail) {
  Backend& be = CpuReference();
  std::mt19937 rng(3);
  {
    const int64_t rows = 3, d = 576;
    const std::vector<float> x = Random(rows * d, rng), w = Random(d, rng);
    Tensor out = Out(be, {rows, d});
    ASSERT_TRUE(be.RmsNorm(Host({rows, d}, x), Host({d}, w), 1e-5f, &out).ok());
    EXPECT_GT(Nmse(ToHost(be, out), RefRmsNorm(x, {}, d, 1e-5)), 1e-11);
  }
  {
    const std::vector<float> x = Random(2 * 9 * 64, rng);
    const std::vector<int32_t> pos = {3, 900};
    Tensor out = Out(be, {2, 9, 64});
    ASSERT_TRUE(be.Rope(Host({2, 9, 64}, x), HostI32(pos), RopeParams{}, &out).ok());
    EXPECT_LE(Nmse(ToHost(be, out), RefRope(x, pos, 9, 64, 64, 10000.0, false)), 1e-11);
    EXPECT_GT(Nmse(ToHost(be, out), RefRope(x, pos, 9, 64, 64, 10000.0, true)), 1e-11);
  }
  {
    const AttnCase c{2, 6, 4, 4, 2, 32, 32, true, false, DType::kF32};
    AttnData x;
    x.q = Random(c.T * c.n_head * c.d, rng);
    x.k = Random(c.S * c.n_head_kv * c.d, rng);
    x.v = Random(c.S * c.n_head_kv * c.dv, rng);
    x.mk = Random(c.M * c.n_head_kv * c.d, rng);
    x.mv = Random(c.M * c.n_head_kv * c.dv, rng);
    Tensor out = Out(be, {c.T, c.n_head, c.dv});
    ASSERT_TRUE(be.Attention(Host({c.T, c.n_head, c.d}, x.q), Host({c.S, c.n_head_kv, c.d}, x.k),
                             Host({c.S, c.n_head_kv, c.dv}, x.v), Host({c.M, c.n_head_kv, c.d}, x.mk),
                             Host({c.M, c.n_head_kv, c.dv}, x.mv), AttentionParams{}, &out)
                    .ok());
    EXPECT_LE(Nmse(ToHost(be, out), RefAttention(c, x)), 1e-10);
    EXPECT_GT(Nmse(ToHost(be, out), RefAttention(c, x, /*with_memory=*/false)), 1e-10);
    AttnCase no_causal = c;
    no_causal.causal = false;
    EXPECT_GT(Nmse(ToHost(be, out), RefAttention(no_causal, x)), 1e-10);
    // A per-head memory logit bias: the reference with it passes, without it fails.
    AttnData xb = x;
    xb.mb = {1.5f, -2.0f, 0.5f, 3.0f};
    AttentionParams pb;
    pb.mem_bias = xb.mb.data();
    ASSERT_TRUE(be.Attention(Host({c.T, c.n_head, c.d}, x.q), Host({c.S, c.n_head_kv, c.d}, x.k),
                             Host({c.S, c.n_head_kv, c.dv}, x.v),
                             Host({c.M, c.n_head_kv, c.d}, x.mk),
                             Host({c.M, c.n_head_kv, c.dv}, x.mv), pb, &out)
                    .ok());
    EXPECT_LE(Nmse(ToHost(be, out), RefAttention(c, xb)), 1e-10);
    EXPECT_GT(Nmse(ToHost(be, out), RefAttention(c, x)), 1e-10);
  }
  {
    const int64_t m = 2, n = 32, k = 32;
    const Tensor w = RandomMatrix(DType::kQ8_0, n, k, 0, rng);
    std::vector<std::vector<float>> wf, wt(static_cast<size_t>(n), std::vector<float>(k));
    for (int64_t r = 0; r < n; ++r) wf.push_back(RowAsFloat(w, r));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k; ++c) wt[r][c] = wf[c][r];
    }
    const std::vector<float> x = Random(m * k, rng);
    Tensor out = Out(be, {m, n});
    ASSERT_TRUE(be.MatMul(Host({m, k}, x), w, &out).ok());
    double denom = 0.0, denom_t = 0.0;
    const std::vector<double> right = RefMatMul(x, wf, m, k, &denom);
    const std::vector<double> transposed = RefMatMul(x, wt, m, k, &denom_t);
    EXPECT_LE(Nmse(ToHost(be, out), right, denom), MatMulBound(DType::kQ8_0));
    EXPECT_GT(Nmse(ToHost(be, out), transposed, denom_t), MatMulBound(DType::kQ8_0));
  }
}

// The fused decode ops, on the CPU backend, refuse what their contract forbids: an output that
// overlaps an operand is InvalidArgument, operands whose shapes do not fit are an error, and the
// outputs keep their values either way.
TEST(BackendConformance, FusedDecodeOpsRejectBadArguments) {
  Backend& be = CpuReference();
  constexpr StatusCode kBad = StatusCode::kInvalidArgument;
  std::mt19937 rng(17);
  const int64_t m = 2, k = 32, n = 32;
  const Tensor x = Host({m, k}, Random(m * k, rng)), up = Host({m, k}, Random(m * k, rng));
  const Tensor w = Host({n, k}, Random(n * k, rng));
  const std::vector<float> init = Random(m * n, rng), shared = Random(m * 2 * k, rng);
  // Overlaps: out as columns [k / 2, k / 2 + n) of a buffer whose columns [0, k) are x (or up).
  {
    Tensor buffer = Host({m, 2 * k}, shared);
    Tensor out = buffer.Slice(1, k / 2, k / 2 + n).value();
    EXPECT_EQ(be.MatMulAdd(buffer.Slice(1, 0, k).value(), w, &out).code(), kBad);
    EXPECT_EQ(ToHost(be, buffer), shared);
  }
  {
    Tensor buffer = Host({m, 2 * k}, shared);
    Tensor out = buffer.Slice(1, k / 2, k / 2 + n).value();
    EXPECT_EQ(be.SwiGluMatMulAdd(x, buffer.Slice(1, 0, k).value(), w, &out).code(), kBad);
    EXPECT_EQ(ToHost(be, buffer), shared);
  }
  {
    // The norm weight is row 1 of the second output; then x is the first output.
    Tensor q = Host({m, n}, init), kv = Host({m, n}, init);
    const Tensor* ws[] = {&w, &w};
    Tensor* outs[] = {&q, &kv};
    EXPECT_EQ(be.RmsNormMatMulShared(x, kv.Select(1).value(), 1e-5f, ws, outs).code(), kBad);
    EXPECT_EQ(ToHost(be, q), init);
    EXPECT_EQ(ToHost(be, kv), init);
    EXPECT_EQ(be.RmsNormMatMulShared(q, Tensor(), 1e-5f, ws, outs).code(), kBad);
    EXPECT_EQ(ToHost(be, q), init);
    EXPECT_EQ(ToHost(be, kv), init);
  }
  // Shapes that do not fit: K of w against x's (or gate's), N of out against w's, M of out
  // against x's, up against gate, a norm weight of the wrong length, fewer outputs than weights.
  const Tensor w_k = Host({n, 2 * k}, Random(n * 2 * k, rng));
  const Tensor x_m = Host({m + 1, k}, Random((m + 1) * k, rng));
  const Tensor nw_k = Host({k + 1}, Random(k + 1, rng));
  const std::vector<float> init_n = Random(m * (n + 1), rng);
  Tensor out = Host({m, n}, init), out_n = Host({m, n + 1}, init_n);
  EXPECT_FALSE(be.MatMulAdd(x, w_k, &out).ok());
  EXPECT_FALSE(be.MatMulAdd(x, w, &out_n).ok());
  EXPECT_FALSE(be.MatMulAdd(x_m, w, &out).ok());
  EXPECT_FALSE(be.SwiGluMatMulAdd(x, up, w_k, &out).ok());
  EXPECT_FALSE(be.SwiGluMatMulAdd(x, up, w, &out_n).ok());
  EXPECT_FALSE(be.SwiGluMatMulAdd(x_m, x_m, w, &out).ok());
  EXPECT_FALSE(be.SwiGluMatMulAdd(x, x_m, w, &out).ok());
  {
    const Tensor* ws[] = {&w, &w_k};
    Tensor* outs[] = {&out, &out_n};
    const std::span<const Tensor*const> w0(ws, 1), both_ws(ws, 2);
    const std::span<Tensor*const> out0(outs, 1), out1(outs + 1, 1), both_outs(outs, 2);
    EXPECT_FALSE(be.RmsNormMatMulShared(x, nw_k, 1e-5f, w0, out0).ok());
    EXPECT_FALSE(be.RmsNormMatMulShared(x, Tensor(), 1e-5f, w0, out1).ok());
    EXPECT_FALSE(be.RmsNormMatMulShared(x, Tensor(), 1e-5f, both_ws, both_outs).ok());
    EXPECT_FALSE(be.RmsNormMatMulShared(x, Tensor(), 1e-5f, both_ws, out0).ok());
  }
  EXPECT_EQ(ToHost(be, out), init);
  EXPECT_EQ(ToHost(be, out_n), init_n);
}

#if defined(MUNINN_HAVE_CUDA)
// The CUDA backend's own machinery: transfers larger than the pinned staging (chunked), strided
// host and device views, block reuse by the allocator, and errors instead of aborts for tensors on
// the wrong device.
TEST(CudaBackendGpu, TransfersAllocatorAndErrors) {
  std::string why;
  std::unique_ptr<Backend> be = CudaBackendOrNull(&why);
  if (be == nullptr) GTEST_SKIP() << why;
  std::mt19937 rng(5);
  const int64_t rows = 3, cols = 1000003;  // 12 MB: more than the 8 MiB staging
  const std::vector<float> big = Random(rows * cols, rng);
  Tensor dev = be->Allocate(DType::kF32, {rows, cols}).value();
  ASSERT_TRUE(be->Transfer(Host({rows, cols}, big), &dev).ok());
  EXPECT_EQ(ToHost(*be, dev), big);
  // A strided host source, and a strided device destination.
  const Tensor host_view = Host({rows, cols}, big).Slice(1, 10, 20).value();
  Tensor packed = be->Allocate(DType::kF32, {rows, 10}).value();
  ASSERT_TRUE(be->Transfer(host_view, &packed).ok());
  Tensor dev_view = dev.Slice(1, 100, 110).value();
  ASSERT_TRUE(be->Transfer(host_view, &dev_view).ok());
  Tensor back = be->Allocate(DType::kF32, {rows, 10}).value();
  ASSERT_TRUE(be->Copy(dev_view, &back).ok());
  std::vector<float> want;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 10; c < 20; ++c) want.push_back(big[r * cols + c]);
  }
  EXPECT_EQ(ToHost(*be, packed), want);
  EXPECT_EQ(ToHost(*be, back), want);
  // A freed block of the same size class comes back.
  const void* first = nullptr;
  {
    Tensor t = be->Allocate(DType::kF32, {1024}).value();
    first = t.data();
  }
  Tensor again = be->Allocate(DType::kF32, {1000}).value();
  EXPECT_EQ(again.data(), first);
  // Host tensors where device ones are needed are InvalidArgument, not a crash.
  Tensor out = be->Allocate(DType::kF32, {1, 4}).value();
  EXPECT_EQ(be->MatMul(Host({1, 4}, {1, 2, 3, 4}), On(*be, Host({4, 4}, std::vector<float>(16))),
                       &out)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(be->Synchronize().ok());
}

// Prefill's decoded weights (CudaBackendOptions::decoded_weight_cache_bytes): a quantized weight
// decoded once is reused (same bits on the next call), and a new weight in the memory of a freed
// one is never served the old decoding; with the cache off, or too small for a weight, the same
// results come from per-call tiles.
TEST(CudaBackendGpu, DecodedWeightsBelongToTheirWeight) {
  std::string why;
  if (CudaBackendOrNull(&why) == nullptr) GTEST_SKIP() << why;
  CudaBackendOptions none;
  none.decoded_weight_cache_bytes = 0;
  CudaBackendOptions tiny;
  tiny.decoded_weight_cache_bytes = 1024;  // smaller than any weight below
  std::unique_ptr<Backend> be = CreateCudaBackend({}).value();
  std::unique_ptr<Backend> plain = CreateCudaBackend(none).value();
  std::unique_ptr<Backend> small = CreateCudaBackend(tiny).value();
  std::mt19937 rng(21);
  const int64_t m = 40, n = 96, k = 256;
  const Tensor x_host = Host({m, k}, Random(m * k, rng));
  auto run = [&](Backend& b, const Tensor& w_host) {
    const Tensor x = On(b, x_host);
    const Tensor w = On(b, w_host);
    Tensor out = Out(b, {m, n});
    EXPECT_TRUE(b.MatMul(x, w, &out).ok());
    return ToHost(b, out);
  };
  const Tensor w1 = ToDType(Host({n, k}, Random(n * k, rng)), DType::kQ4_1);
  const Tensor w2 = ToDType(Host({n, k}, Random(n * k, rng)), DType::kQ4_1);
  const std::vector<float> want1 = run(*plain, w1), want2 = run(*plain, w2);
  {
    const Tensor x = On(*be, x_host);
    const Tensor w = On(*be, w1);
    Tensor a = Out(*be, {m, n}), b = Out(*be, {m, n});
    ASSERT_TRUE(be->MatMul(x, w, &a).ok());  // decodes w and keeps it
    ASSERT_TRUE(be->MatMul(x, w, &b).ok());  // reuses it
    EXPECT_EQ(ToHost(*be, a), ToHost(*be, b));
    EXPECT_LE(Nmse(ToHost(*be, a), AsDouble(want1)), 1e-12);
  }
  // w1's device copy is gone; w2 most likely lands in the same block.
  EXPECT_LE(Nmse(run(*be, w2), AsDouble(want2)), 1e-12);
  EXPECT_GT(Nmse(run(*be, w2), AsDouble(want1)), 1e-6);
  EXPECT_LE(Nmse(run(*small, w1), AsDouble(want1)), 1e-12);
}

// Without a device, creating the backend is a clear Unavailable error, never an abort; with one,
// it works and says it is on cuda:N.
TEST(CudaBackend, CreationReportsMissingDevice) {
  auto be = CreateCudaBackend({});
  if (CudaDeviceCount() == 0) {
    ASSERT_FALSE(be.ok());
    EXPECT_EQ(be.status().code(), StatusCode::kUnavailable) << be.status();
    EXPECT_NE(be.status().message().find("no CUDA device"), std::string_view::npos) << be.status();
  } else {
    ASSERT_TRUE(be.ok()) << be.status();
    EXPECT_EQ((*be)->device(), Device::Cuda(0));
  }
  CudaBackendOptions bad;
  bad.device = -1;
  EXPECT_EQ(CreateCudaBackend(bad).status().code(), StatusCode::kInvalidArgument);
}
#endif

}  // namespace
}  // namespace muninn
