// AttentionOp: attention over [memory ; local] keys with one joint softmax (MemLong retrieval
// attention, specs/memlong.md §6 and rule D4), computed with online-softmax tiling. The contract is
// Backend::Attention's (backend.h); the kernel layout is described in attention_kernel.h.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cpu/attention_kernel.h"
#include "cpu/cpu_ops.h"
#include "muninn/core/fp16.h"

namespace muninn::cpu {
namespace attn {
namespace {

// The portable reference traits: one float per "vector", std::exp.
struct ScalarIsa {
  using V = float;
  static constexpr int kW = 1;
  static constexpr int kMaxRb = 4;
  static constexpr int kMaxNv = 4;
  static V Zero() { return 0.0f; }
  static V Set1(float x) { return x; }
  static V Load(const float* p) { return *p; }
  static void Store(float* p, V v) { *p = v; }
  static V Fma(V a, V b, V c) { return a * b + c; }
  static V Mul(V a, V b) { return a * b; }
  static V Add(V a, V b) { return a + b; }
  static V Sub(V a, V b) { return a - b; }
  static V Max(V a, V b) { return a > b ? a : b; }
  static constexpr int kScoreKeys = 2;
  static float ReduceAdd(V v) { return v; }
  static V Exp(V x) { return std::exp(x); }
  static V ZeroIfNegInf(V x) { return x == -std::numeric_limits<float>::infinity() ? 0.0f : x; }
  static V LoadF16(const uint16_t* p) { return Fp16ToFp32(*p); }
  static V LoadF16Partial(const uint16_t* p, int) { return Fp16ToFp32(*p); }
  static V LoadI8(const int8_t* p) { return static_cast<float>(*p); }
  static V Set1F16(uint16_t h) { return Fp16ToFp32(h); }
};

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t CeilDiv(int64_t x, int64_t m) { return (x + m - 1) / m; }

}  // namespace

void AttendTileScalar(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                      const RunState& st) {
  AttendTile<ScalarIsa>(qb, tile, sc, st);
}

AttentionPlan PlanAttention(int64_t T, int64_t S, int64_t M, int64_t n_head, int64_t n_head_kv,
                            int64_t d, int64_t dv, int num_threads, bool separate_mem_q) {
  AttentionPlan p;
  p.group = n_head / n_head_kv;
  p.tq = std::clamp<int64_t>(kTargetRows / p.group, 1, std::max<int64_t>(T, 1));
  p.rows_max = p.tq * p.group;
  p.rp_max = RoundUp(p.rows_max, kPad);
  p.dp = RoundUp(d, kPad);
  p.dvp = RoundUp(dv, kPad);
  p.n_qtiles = CeilDiv(T, p.tq);
  const int64_t total_keys = M + S;
  const int64_t threads = std::max(num_threads, 1);
  const int64_t blocks = p.n_qtiles * n_head_kv;
  // Few blocks for the threads (decode: 3 kv heads on 2 threads) and enough keys: split the keys
  // into ranges, aiming for >= 8 tasks per thread so the dynamic schedule balances, never below
  // kMinSplitKeys keys. A split task then takes every kv head of its query tile, so it streams
  // whole K/V rows ([n_head_kv, d] contiguous) rather than one head's strided slice of each.
  p.heads_per_task = 1;
  p.n_split = 1;
  if (threads > 1 && blocks < 8 * threads && total_keys >= 2 * kMinSplitKeys) {
    p.heads_per_task = n_head_kv;
    const int64_t want = CeilDiv(8 * threads, p.n_qtiles);
    p.n_split = std::max<int64_t>(1, std::min(want, total_keys / kMinSplitKeys));
  }
  p.n_items = p.n_qtiles * (n_head_kv / p.heads_per_task);
  p.split_keys = RoundUp(std::max<int64_t>(CeilDiv(total_keys, p.n_split), 1), kKeyTile);
  p.n_split = std::max<int64_t>(1, CeilDiv(total_keys, p.split_keys));
  p.state_floats = 2 * p.rp_max + p.rp_max * p.dvp;  // m, l, acc of one block
  p.query_floats = p.rows_max * p.dp + d * p.rp_max;  // q and qt of one block
  p.separate_mem_q = separate_mem_q && M > 0;
  p.workspace_floats = p.heads_per_task * (p.query_floats             // q, qt per head
                                           + p.state_floats           // state, per head
                                           + (p.separate_mem_q ? p.query_floats : 0))  // mem q
                       + kKeyTile * p.dp                           // kf
                       + kKeyTile * p.dvp                          // vf
                       + kKeyTile * p.rp_max                       // p
                       + p.rp_max;                                 // corr
  p.workspace_ints = p.rows_max;                                   // visible
  p.partial_floats =
      p.n_split > 1 ? p.n_items * p.n_split * p.heads_per_task * p.state_floats : 0;
  return p;
}

}  // namespace attn

namespace {

using attn::AttentionPlan;
using attn::kKeyTile;

// Inputs after validation: base pointers and byte strides of the [rows, heads, dim] operands.
struct Operand {
  const char* data = nullptr;
  int64_t s0 = 0, s1 = 0;  // bytes per row, per head
  DType dtype = DType::kF32;
};

Operand OperandOf(const Tensor& t) {
  return Operand{static_cast<const char*>(t.data()), t.stride(0), t.stride(1), t.dtype()};
}

// `kv`: a key or value operand, which may also be f16 or q8_0 (head dim a multiple of 32).
Status CheckOperand(const Tensor& t, const char* name, bool kv) {
  if (!t.defined()) return InvalidArgumentError(std::string("Attention: ") + name + " is undefined");
  if (!t.device().is_cpu()) {
    return InvalidArgumentError(std::string("Attention: ") + name +
                                " is not a host tensor; transfer it to the CPU first");
  }
  if (t.ndim() != 3) {
    return InvalidArgumentError(std::string("Attention: ") + name +
                                " must be 3-d [rows, heads, head_dim], got " + t.DebugString());
  }
  const bool dtype_ok =
      t.dtype() == DType::kF32 || (kv && (t.dtype() == DType::kF16 || t.dtype() == DType::kQ8_0));
  if (!dtype_ok) {
    return InvalidArgumentError(std::string("Attention: ") + name + " must be f32" +
                                (kv ? ", f16 or q8_0" : "") + ", got " + t.DebugString());
  }
  if (t.stride(2) != static_cast<int64_t>(GetDTypeInfo(t.dtype()).block_bytes)) {
    return InvalidArgumentError(std::string("Attention: ") + name +
                                " must have a packed innermost dimension (head_dim), got " +
                                t.DebugString() + "; make it contiguous first");
  }
  return Status::Ok();
}

// [first byte, one past the last byte) that a tensor addresses; empty for no elements.
struct ByteRange {
  uintptr_t begin = 0, end = 0;
};

ByteRange RangeOf(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return {};
  uintptr_t last = reinterpret_cast<uintptr_t>(t.data());
  for (int i = 0; i < t.ndim(); ++i) {
    // A quantized innermost dimension counts elements but strides per block.
    const int64_t n = i == t.ndim() - 1 ? t.dim(i) / BlockSize(t.dtype()) : t.dim(i);
    last += static_cast<uintptr_t>((n - 1) * t.stride(i));
  }
  return {reinterpret_cast<uintptr_t>(t.data()),
          last + static_cast<uintptr_t>(GetDTypeInfo(t.dtype()).block_bytes)};
}

bool Overlaps(const ByteRange& a, const ByteRange& b) {
  return a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end;
}

struct Dims {
  int64_t T = 0, S = 0, M = 0, n_head = 0, n_head_kv = 0, d = 0, dv = 0;
};

StatusOr<Dims> Validate(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                        const Tensor& mem_v, const AttentionParams& params, const Tensor* out) {
  RETURN_IF_ERROR(params.Validate());
  if (out == nullptr) return InvalidArgumentError("Attention: out is null");
  RETURN_IF_ERROR(CheckOperand(q, "q", false));
  RETURN_IF_ERROR(CheckOperand(k, "k", true));
  RETURN_IF_ERROR(CheckOperand(v, "v", true));
  RETURN_IF_ERROR(CheckOperand(*out, "out", false));
  Dims d;
  d.T = q.dim(0);
  d.n_head = q.dim(1);
  d.d = q.dim(2);
  d.S = k.dim(0);
  d.n_head_kv = k.dim(1);
  d.dv = v.dim(2);
  auto shapes = [&] {
    return " (q " + q.shape().ToString() + ", k " + k.shape().ToString() + ", v " +
           v.shape().ToString() + ")";
  };
  if (d.n_head < 1 || d.n_head_kv < 1 || d.d < 1 || d.dv < 1) {
    return InvalidArgumentError("Attention: head counts and head dims must be >= 1" + shapes());
  }
  if (k.dim(2) != d.d) {
    return InvalidArgumentError("Attention: k's head_dim differs from q's" + shapes());
  }
  if (v.dim(0) != d.S || v.dim(1) != d.n_head_kv) {
    return InvalidArgumentError("Attention: v must have k's rows and heads" + shapes());
  }
  if (d.n_head % d.n_head_kv != 0) {
    return InvalidArgumentError("Attention: n_head must be a multiple of n_head_kv" + shapes());
  }
  // Bounds that keep every block's row and scratch arithmetic small; far above real models.
  constexpr int64_t kMaxGroup = 4096, kMaxHeadDim = 65536;
  if (d.n_head / d.n_head_kv > kMaxGroup || d.d > kMaxHeadDim || d.dv > kMaxHeadDim) {
    return InvalidArgumentError("Attention: more than 4096 query heads per kv head or a head dim "
                                "above 65536 is not supported" + shapes());
  }
  if (mem_k.defined() != mem_v.defined()) {
    return InvalidArgumentError("Attention: mem_k and mem_v must both be given or both undefined");
  }
  if (mem_k.defined()) {
    RETURN_IF_ERROR(CheckOperand(mem_k, "mem_k", true));
    RETURN_IF_ERROR(CheckOperand(mem_v, "mem_v", true));
    d.M = mem_k.dim(0);
    if (mem_v.dim(0) != d.M || mem_k.dim(1) != d.n_head_kv || mem_v.dim(1) != d.n_head_kv ||
        mem_k.dim(2) != d.d || mem_v.dim(2) != d.dv) {
      return InvalidArgumentError("Attention: memory block must be mem_k [M, n_head_kv, d] and "
                                  "mem_v [M, n_head_kv, dv], got mem_k " +
                                  mem_k.shape().ToString() + ", mem_v " +
                                  mem_v.shape().ToString() + shapes());
    }
  }
  const Tensor* mem_q = params.mem_q;
  if (mem_q != nullptr && mem_q->defined()) {
    RETURN_IF_ERROR(CheckOperand(*mem_q, "mem_q", false));
    if (!(mem_q->shape() == q.shape())) {
      return InvalidArgumentError("Attention: mem_q (the memory block's queries) must have q's "
                                  "shape " + q.shape().ToString() + ", got " +
                                  mem_q->shape().ToString());
    }
    if (Overlaps(RangeOf(*out), RangeOf(*mem_q))) {
      return InvalidArgumentError("Attention: out must not overlap mem_q");
    }
  }
  if (!(out->shape() == Shape{d.T, d.n_head, d.dv})) {
    return InvalidArgumentError("Attention: out must be [T, n_head, dv] = " +
                                Shape{d.T, d.n_head, d.dv}.ToString() + ", got " +
                                out->shape().ToString());
  }
  if (params.causal && d.T > d.S) {
    return InvalidArgumentError("Attention: causal attention needs T <= S (the queries are the "
                                "last T of the S local positions), got T = " +
                                std::to_string(d.T) + ", S = " + std::to_string(d.S));
  }
  if (d.T > 0 && d.S + d.M == 0) {
    return InvalidArgumentError("Attention: no keys to attend to (S = 0 and no memory block)");
  }
  const ByteRange out_range = RangeOf(*out);
  for (const Tensor* in : {&q, &k, &v, &mem_k, &mem_v}) {
    if (Overlaps(out_range, RangeOf(*in))) {
      return InvalidArgumentError("Attention: out must not overlap q, k, v or the memory block");
    }
  }
  return d;
}

attn::AttendTileFn SelectKernel(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return attn::AttendTileAvx512;
    case CpuIsa::kAvx2: return attn::AttendTileAvx2;
    case CpuIsa::kScalar: break;
  }
  return attn::AttendTileScalar;
}

// Runs one task: a query tile, one kv head (or all of them when keys are split) and one key
// range; see attention_kernel.h for the cut.
class AttentionRunner {
 public:
  // `mem_q` is used for the memory tiles when plan.separate_mem_q (else q).
  AttentionRunner(const Dims& dims, const AttentionPlan& plan, float scale, bool causal,
                  attn::AttendTileFn kernel, const Tensor& q, const Tensor* mem_q, const Tensor& k,
                  const Tensor& v, const Tensor& mem_k, const Tensor& mem_v, Tensor* out,
                  const float* mem_bias = nullptr)
      : dims_(dims), plan_(plan), scale_(scale), causal_(causal), kernel_(kernel),
        q_(OperandOf(q)), mq_(plan.separate_mem_q ? OperandOf(*mem_q) : OperandOf(q)),
        k_(OperandOf(k)), v_(OperandOf(v)),
        mk_(mem_k.defined() ? OperandOf(mem_k) : Operand{}),
        mv_(mem_v.defined() ? OperandOf(mem_v) : Operand{}), out_(OperandOf(*out)),
        out_data_(static_cast<char*>(out->data())), mem_bias_(mem_bias) {
    if (plan_.partial_floats > 0) partial_.resize(static_cast<size_t>(plan_.partial_floats));
  }

  int64_t num_tasks() const { return plan_.n_items * plan_.n_split; }

  // Per-thread scratch for RunTask.
  struct Workspace {
    std::vector<float> f;
    std::vector<int> i;
    std::vector<float> bias;  // [heads_per_task, rp_max] memory-tile score bias rows (mem_bias)
  };
  Workspace MakeWorkspace() const {
    return Workspace{std::vector<float>(static_cast<size_t>(plan_.workspace_floats)),
                     std::vector<int>(static_cast<size_t>(plan_.workspace_ints)),
                     std::vector<float>(mem_bias_ == nullptr ? 0 : static_cast<size_t>(
                                            plan_.heads_per_task * plan_.rp_max))};
  }

  void RunTask(int64_t task, Workspace* ws) {
    const int64_t item = task / plan_.n_split;
    const int64_t split = task % plan_.n_split;
    const int64_t chunks = dims_.n_head_kv / plan_.heads_per_task;
    // The last query tiles first: under a causal mask they see the most keys.
    const int64_t qtile = plan_.n_qtiles - 1 - item / chunks;
    const int64_t g0 = (item % chunks) * plan_.heads_per_task;
    const int64_t n_heads = plan_.heads_per_task;
    const int64_t G = plan_.group;
    const int64_t t0 = qtile * plan_.tq;
    const int64_t tn = std::min(plan_.tq, dims_.T - t0);
    const int rows = static_cast<int>(tn * G);
    const int64_t rp = (rows + attn::kPad - 1) / attn::kPad * attn::kPad;
    const int64_t d = dims_.d, dp = plan_.dp, dvp = plan_.dvp;

    // Workspace: per head [q | qt | m | l | acc | mem q | mem qt] (the memory block's queries only
    // with separate_mem_q), then the tile scratch shared by the heads.
    const int64_t qf = plan_.query_floats;
    const int64_t per_head = qf + plan_.state_floats + (plan_.separate_mem_q ? qf : 0);
    float* shared = ws->f.data() + n_heads * per_head;
    attn::TileScratch sc;
    sc.kf = shared;                                       // [kKeyTile, dp]
    sc.vf = sc.kf + kKeyTile * dp;                        // [kKeyTile, dvp]
    sc.p = sc.vf + kKeyTile * dvp;                        // [kKeyTile, rp]
    sc.corr = sc.p + kKeyTile * plan_.rp_max;             // [rp]
    int* visible = ws->i.data();                          // [rows]
    auto query_base = [&](int64_t hh, bool memory) -> float* {
      float* base = ws->f.data() + hh * per_head;
      return memory && plan_.separate_mem_q ? base + qf + plan_.state_floats : base;
    };
    auto block_of = [&](int64_t hh, bool memory = false) {
      const float* base = query_base(hh, memory);
      attn::QueryBlock qb{base, base + plan_.rows_max * dp, rows, rp, d, dp, dims_.dv, dvp};
      if (memory && mem_bias_ != nullptr) qb.bias = ws->bias.data() + hh * plan_.rp_max;
      return qb;
    };
    auto state_of = [&](int64_t hh) {
      float* base = ws->f.data() + hh * per_head + qf;
      return attn::RunState{base, base + plan_.rp_max, base + 2 * plan_.rp_max};
    };
    // Gathers head group g's query rows from `src`, scaled, in both layouts the kernels use.
    auto gather = [&](const Operand& src, int64_t g, float* qb /* [rows, dp] */) {
      float* qt = qb + plan_.rows_max * dp;  // [d, rp]
      std::fill(qt, qt + d * rp, 0.0f);
      for (int r = 0; r < rows; ++r) {
        const float* row = QueryRow(src, t0 + r / G, g * G + r % G);
        float* dst = qb + r * dp;
        for (int64_t i = 0; i < d; ++i) {
          dst[i] = row[i] * scale_;
          qt[i * rp + r] = dst[i];
        }
        std::fill(dst + d, dst + dp, 0.0f);
      }
    };

    // Gather each head's query rows (and its memory queries when separate); reset its state.
    for (int64_t hh = 0; hh < n_heads; ++hh) {
      gather(q_, g0 + hh, query_base(hh, false));
      if (plan_.separate_mem_q) gather(mq_, g0 + hh, query_base(hh, true));
      if (mem_bias_ != nullptr) {  // row r is head (g0 + hh) * G + r % G
        float* b = ws->bias.data() + hh * plan_.rp_max;
        for (int r = 0; r < rows; ++r) b[r] = mem_bias_[(g0 + hh) * G + r % G];
        std::fill(b + rows, b + rp, 0.0f);
      }
      const attn::RunState st = state_of(hh);
      std::fill(st.m, st.m + rp, -std::numeric_limits<float>::infinity());
      std::fill(st.l, st.l + rp, 0.0f);
      std::fill(st.acc, st.acc + rp * dvp, 0.0f);
    }

    // This task's keys, as indices into [memory ; local]. The heads walk each tile together, so
    // a tile's rows are read whole while they are in cache.
    const int64_t kb = split * plan_.split_keys;
    const int64_t ke = std::min(dims_.M + dims_.S, kb + plan_.split_keys);
    // Memory keys: every row sees all of them.
    for (int64_t j0 = kb; j0 < std::min(ke, dims_.M); j0 += kKeyTile) {
      const int n = static_cast<int>(std::min<int64_t>(kKeyTile, std::min(ke, dims_.M) - j0));
      for (int64_t hh = 0; hh < n_heads; ++hh) {
        kernel_(block_of(hh, /*memory=*/true), Tile(mk_, mv_, g0 + hh, j0, n, nullptr), sc,
                state_of(hh));
      }
    }
    // Local keys: row r sees [0, Limit(t_r)).
    const int64_t lim_first = Limit(t0), lim_last = Limit(t0 + tn - 1);
    const int64_t lb = std::max(kb, dims_.M) - dims_.M;
    const int64_t le = std::min(ke - dims_.M, lim_last);
    for (int64_t j0 = lb; j0 < le; j0 += kKeyTile) {
      const int n = static_cast<int>(std::min<int64_t>(kKeyTile, le - j0));
      const int* vis = nullptr;
      if (j0 + n > lim_first) {
        for (int r = 0; r < rows; ++r) {
          visible[r] = static_cast<int>(std::clamp<int64_t>(Limit(t0 + r / G) - j0, 0, n));
        }
        vis = visible;
      }
      for (int64_t hh = 0; hh < n_heads; ++hh) {
        kernel_(block_of(hh), Tile(k_, v_, g0 + hh, j0, n, vis), sc, state_of(hh));
      }
    }

    for (int64_t hh = 0; hh < n_heads; ++hh) {
      const attn::RunState st = state_of(hh);
      if (plan_.n_split == 1) {
        for (int r = 0; r < rows; ++r) {
          WriteRow(t0 + r / G, (g0 + hh) * G + r % G, st.acc + r * dvp, 1.0f / st.l[r]);
        }
      } else {
        float* part = PartialState(task * n_heads + hh);
        std::copy(st.m, st.m + rows, part);
        std::copy(st.l, st.l + rows, part + plan_.rp_max);
        std::copy(st.acc, st.acc + rows * dvp, part + 2 * plan_.rp_max);
      }
    }
  }

  // Combines the split states of every block into out (after all tasks ran).
  void Merge() {
    if (plan_.n_split == 1) return;
    const int64_t G = plan_.group, dvp = plan_.dvp, n_heads = plan_.heads_per_task;
    const int64_t chunks = dims_.n_head_kv / n_heads;
    std::vector<float> acc(static_cast<size_t>(dvp));
    for (int64_t item = 0; item < plan_.n_items; ++item) {
      const int64_t qtile = plan_.n_qtiles - 1 - item / chunks;
      const int64_t g0 = (item % chunks) * n_heads;
      const int64_t t0 = qtile * plan_.tq;
      const int64_t rows = std::min(plan_.tq, dims_.T - t0) * G;
      for (int64_t hh = 0; hh < n_heads; ++hh) {
        auto part_of = [&](int64_t s) {
          return PartialState((item * plan_.n_split + s) * n_heads + hh);
        };
        for (int64_t r = 0; r < rows; ++r) {
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t s = 0; s < plan_.n_split; ++s) m = std::max(m, part_of(s)[r]);
          float l = 0.0f;
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t s = 0; s < plan_.n_split; ++s) {
            const float* part = part_of(s);
            if (part[plan_.rp_max + r] == 0.0f) continue;  // this split saw no key of the row
            const float w = std::exp(part[r] - m);
            l += w * part[plan_.rp_max + r];
            const float* pa = part + 2 * plan_.rp_max + r * dvp;
            for (int64_t c = 0; c < dims_.dv; ++c) acc[static_cast<size_t>(c)] += w * pa[c];
          }
          WriteRow(t0 + r / G, (g0 + hh) * G + r % G, acc.data(), 1.0f / l);
        }
      }
    }
  }

 private:
  // Local keys visible to query t: [0, Limit(t)).
  int64_t Limit(int64_t t) const { return causal_ ? t + (dims_.S - dims_.T) + 1 : dims_.S; }

  static const float* QueryRow(const Operand& q, int64_t t, int64_t h) {
    return reinterpret_cast<const float*>(q.data + t * q.s0 + h * q.s1);
  }

  void WriteRow(int64_t t, int64_t h, const float* acc, float inv_l) const {
    float* dst = reinterpret_cast<float*>(out_data_ + t * out_.s0 + h * out_.s1);
    for (int64_t c = 0; c < dims_.dv; ++c) dst[c] = acc[c] * inv_l;
  }

  static attn::KeyTile Tile(const Operand& k, const Operand& v, int64_t g, int64_t j0, int n,
                            const int* visible) {
    return attn::KeyTile{k.data + g * k.s1 + j0 * k.s0, k.s0, k.dtype,
                         v.data + g * v.s1 + j0 * v.s0, v.s0, v.dtype, n, visible};
  }

  // The saved state of one block of one task: [rp] m, [rp] l, [rp, dvp] acc.
  float* PartialState(int64_t task_block) {
    return partial_.data() + task_block * plan_.state_floats;
  }

  const Dims dims_;
  const AttentionPlan plan_;
  const float scale_;
  const bool causal_;
  const attn::AttendTileFn kernel_;
  const Operand q_, mq_, k_, v_, mk_, mv_, out_;
  char* const out_data_;  // out_.data, writable
  const float* const mem_bias_;  // [n_head] or null (AttentionParams::mem_bias)
  std::vector<float> partial_;  // [n_items * n_split * heads_per_task] block states
};

}  // namespace

Status AttentionOp(const CpuContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& mem_k, const Tensor& mem_v, const AttentionParams& p,
                   Tensor* out) {
  ASSIGN_OR_RETURN(const Dims dims, Validate(q, k, v, mem_k, mem_v, p, out));
  RETURN_IF_ERROR(p.Validate(dims.n_head));
  if (dims.T == 0) return Status::Ok();
  const float scale = p.scale > 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(dims.d));
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const bool separate_mem_q = p.mem_q != nullptr && p.mem_q->defined();
  const AttentionPlan plan =
      attn::PlanAttention(dims.T, dims.S, dims.M, dims.n_head, dims.n_head_kv, dims.d, dims.dv,
                          threads, separate_mem_q);
  AttentionRunner runner(dims, plan, scale, p.causal, SelectKernel(ctx.isa), q, p.mem_q, k, v,
                         mem_k, mem_v, out, p.mem_bias);
  const int64_t tasks = runner.num_tasks();
  if (threads > 1 && tasks > 1) {
    // Dynamic schedule: blocks differ in cost (causal masks), so threads pull tasks.
    std::atomic<int64_t> next{0};
    ctx.pool->RunOnAll([&](int, int) {
      AttentionRunner::Workspace ws = runner.MakeWorkspace();
      for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) runner.RunTask(t, &ws);
    });
  } else {
    AttentionRunner::Workspace ws = runner.MakeWorkspace();
    for (int64_t t = 0; t < tasks; ++t) runner.RunTask(t, &ws);
  }
  runner.Merge();
  return Status::Ok();
}

}  // namespace muninn::cpu
