// Private to the CPU backend: the per-task bodies of the training attention (contract in
// attention_backward.h, driver in attention_backward.cc). They are templates on a tag type so
// that each ISA file instantiates its own copy with its own compiler flags (internal linkage
// through the file-local tag, as attention_kernel.h does); the loops are plain C++ that the
// compiler vectorises for the target.
//
// Backward (FlashAttention-2's two loops, keys in tiles of 64): P = exp(scale · q·k (+ b[h] for memory
// keys) - lse) is recomputed from the forward's lse, dP = dO · v, D = rowsum(dO ∘ O),
// dS = P ∘ (dP - D);
//   pass 1, per block of query rows and kv head:  dQ = scale · dS · K (memory keys: dMemQ), and
//                                                 the block's Σ dS over memory keys per head (db)
//   pass 2, per block of local keys and kv head:  dV = Pᵀ · dO, dK = scale · dSᵀ · Q
// Each task owns its output rows and sums in a fixed order: no atomics, and results that do not
// depend on the thread count.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace muninn::cpu::attn_train {

inline constexpr int64_t kRowsPerTask = 4;  // forward: query rows per task
inline constexpr int64_t kQueryBlock = 8;   // pass 1: query rows per task (times the G heads)
inline constexpr int64_t kKeyBlock = 64;    // pass 2: key rows per task (one key tile)

struct Geometry {
  int64_t T, S, M, H, Hkv, G, d, dv, offset;  // offset = S - T (causal alignment)
  float scale;
  bool causal;
  // Local keys visible to query t: [0, Visible(t)).
  int64_t Visible(int64_t t) const { return causal ? std::min(S, t + offset + 1) : S; }
  // First query that sees local key s.
  int64_t FirstQuery(int64_t s) const { return causal ? std::max<int64_t>(0, s - offset) : 0; }
};

// The arrays of one call (shapes in attention_backward.h). D: [T, n_head] = rowsum(dO ∘ O).
// dmq: where the memory keys' share of dQ goes (dmem_q, or dq without memory queries).
struct Args {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* mem_q = nullptr;
  const float* mem_k = nullptr;
  const float* mem_v = nullptr;
  const float* lse = nullptr;  // backward input
  const float* dout = nullptr;
  const float* D = nullptr;
  float* out = nullptr;  // forward outputs
  float* out_lse = nullptr;
  float* dq = nullptr;  // backward outputs
  float* dk = nullptr;
  float* dv = nullptr;
  float* dmq = nullptr;
  const float* mem_bias = nullptr;  // [n_head] memory logit bias, or null
  // [n_qblocks, n_head] pass 1's per-block Σ dS over memory keys (dmem_bias), or null.
  float* db_part = nullptr;
};

// 8 independent accumulators so that the loop vectorises without -ffast-math; the final sum's
// order is fixed (a result depends on the ISA, never on the thread count).
template <class Tag>
inline float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <class Tag>
inline void Axpy(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) y[i + j] += a * x[i + j];
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// Forward: query rows [task · kRowsPerTask, +kRowsPerTask), every head: out and out_lse.
template <class Tag>
void ForwardTask(const Geometry& g, const Args& a, int64_t task) {
  std::vector<float> p(static_cast<size_t>(g.M + g.S));
  std::vector<float> acc(static_cast<size_t>(g.dv));
  const int64_t t_end = std::min(g.T, (task + 1) * kRowsPerTask);
  for (int64_t t = task * kRowsPerTask; t < t_end; ++t) {
    const int64_t vis = g.Visible(t);
    for (int64_t h = 0; h < g.H; ++h) {
      const int64_t kvh = h / g.G, row = t * g.H + h;
      const float* qr = a.q + row * g.d;
      const float* mqr = a.mem_q != nullptr ? a.mem_q + row * g.d : qr;
      const float mb = a.mem_bias != nullptr ? a.mem_bias[h] : 0.0f;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < g.M; ++j) {
        const float s = g.scale * Dot<Tag>(mqr, a.mem_k + (j * g.Hkv + kvh) * g.d, g.d) + mb;
        p[static_cast<size_t>(j)] = s;
        mx = std::max(mx, s);
      }
      for (int64_t s = 0; s < vis; ++s) {
        const float sc = g.scale * Dot<Tag>(qr, a.k + (s * g.Hkv + kvh) * g.d, g.d);
        p[static_cast<size_t>(g.M + s)] = sc;
        mx = std::max(mx, sc);
      }
      double sum = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < g.M + vis; ++j) {
        const float e = std::exp(p[static_cast<size_t>(j)] - mx);
        sum += e;
        const float* vr =
            j < g.M ? a.mem_v + (j * g.Hkv + kvh) * g.dv : a.v + ((j - g.M) * g.Hkv + kvh) * g.dv;
        Axpy<Tag>(e, vr, acc.data(), g.dv);
      }
      const auto inv = static_cast<float>(1.0 / sum);
      float* orow = a.out + row * g.dv;
      for (int64_t i = 0; i < g.dv; ++i) orow[i] = acc[static_cast<size_t>(i)] * inv;
      a.out_lse[row] = mx + static_cast<float>(std::log(sum));
    }
  }
}

// e^x for x <= 0 in plain float arithmetic that the compiler vectorises (std::exp in a loop does
// not vectorise without -ffast-math): x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor
// polynomial (relative error < 2e-7 with float rounding), times 2^n built in the exponent field.
// Below -87 (masked keys pass -inf) the result is exactly 0.
inline float ExpNonPositive(float x) {
  const bool keep = x >= -87.0f;
  x = keep ? x : -87.0f;
  const float n = std::floor(x * 1.44269504f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return keep ? p * std::bit_cast<float>(bits) : 0.0f;
}

// Keys (or values) are handled in tiles of kKeyTile, transposed into [dim][kKeyTile] scratch so
// that a row's scores against the whole tile are FMAs over keys as vector lanes (no horizontal
// sums); columns past the tile's n keys are zero.
inline constexpr int64_t kKeyTile = 64;

// dst[i * kKeyTile + jj] = rows[(j0 + jj) * stride + i] for jj < n, i < dim; zero for jj >= n.
inline void TransposeTile(const float* rows, int64_t stride, int64_t j0, int64_t n, int64_t dim,
                          float* dst) {
  std::fill(dst, dst + dim * kKeyTile, 0.0f);
  for (int64_t jj = 0; jj < n; ++jj) {
    const float* src = rows + (j0 + jj) * stride;
    for (int64_t i = 0; i < dim; ++i) dst[i * kKeyTile + jj] = src[i];
  }
}

// out[jj] = Σ_i x[i] · tile[i][jj] for the tile's kKeyTile columns (a row times a transposed tile).
template <class Tag>
inline void RowTimesTile(const float* __restrict x, const float* __restrict tile, int64_t dim,
                         float* __restrict out) {
  float acc[kKeyTile] = {};
  for (int64_t i = 0; i < dim; ++i) {
    const float xi = x[i];
    const float* t = tile + i * kKeyTile;
    for (int64_t jj = 0; jj < kKeyTile; ++jj) acc[jj] += xi * t[jj];
  }
  std::copy(acc, acc + kKeyTile, out);
}

// Pass 1: dQ (and dMemQ) of query rows [t0, t1) = block task / Hkv, for the G heads of kv head
// task % Hkv. The block's (t1 - t0) · G (row, head) pairs share every key tile, so each K/V row is
// read (and transposed) once per block.
template <class Tag>
void Pass1Task(const Geometry& g, const Args& a, int64_t task) {
  const int64_t kvh = task % g.Hkv;
  const int64_t t0 = (task / g.Hkv) * kQueryBlock, t1 = std::min(g.T, t0 + kQueryBlock);
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
      const int64_t row = t * g.H + h;
      std::fill(a.dq + row * g.d, a.dq + (row + 1) * g.d, 0.0f);
      if (a.dmq != a.dq) std::fill(a.dmq + row * g.d, a.dmq + (row + 1) * g.d, 0.0f);
    }
  }
  std::vector<float> kt(static_cast<size_t>(g.d * kKeyTile)), vt(static_cast<size_t>(g.dv * kKeyTile));
  float sc[kKeyTile], dp[kKeyTile];
  // Σ dS over this block's memory keys per head of the group, summed in (tile, query, key) order.
  std::vector<double> db(a.db_part != nullptr ? static_cast<size_t>(g.G) : 0, 0.0);
  // One tile of keys [j0, j0 + n) of `kbase`/`vbase` ([keys, Hkv, d] / [.., dv]).
  const auto tile = [&](const float* kbase, const float* vbase, int64_t j0, int64_t n,
                        const float* qbase, float* dqbase, bool memory) {
    TransposeTile(kbase + kvh * g.d, g.Hkv * g.d, j0, n, g.d, kt.data());
    TransposeTile(vbase + kvh * g.dv, g.Hkv * g.dv, j0, n, g.dv, vt.data());
    for (int64_t t = t0; t < t1; ++t) {
      // Keys of the tile this query sees: all memory keys; local keys below Visible(t).
      const int64_t nv = memory ? n : std::clamp<int64_t>(g.Visible(t) - j0, 0, n);
      if (nv == 0) continue;
      for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
        const int64_t row = t * g.H + h;
        const float bias = (memory && a.mem_bias != nullptr ? a.mem_bias[h] : 0.0f) - a.lse[row];
        RowTimesTile<Tag>(qbase + row * g.d, kt.data(), g.d, sc);
        RowTimesTile<Tag>(a.dout + row * g.dv, vt.data(), g.dv, dp);
        const float Dr = a.D[row];
        // dS over the whole tile (fixed trip counts vectorise at -O2); only [0, nv) is used.
        for (int64_t jj = 0; jj < kKeyTile; ++jj) {
          sc[jj] = ExpNonPositive(g.scale * sc[jj] + bias) * (dp[jj] - Dr);
        }
        if (memory && a.db_part != nullptr) {
          double db_row = 0.0;
          for (int64_t jj = 0; jj < nv; ++jj) db_row += sc[jj];
          db[static_cast<size_t>(h - kvh * g.G)] += db_row;
        }
        float* dqr = dqbase + row * g.d;
        for (int64_t jj = 0; jj < nv; ++jj) {
          Axpy<Tag>(g.scale * sc[jj], kbase + ((j0 + jj) * g.Hkv + kvh) * g.d, dqr, g.d);
        }
      }
    }
  };
  for (int64_t j0 = 0; j0 < g.M; j0 += kKeyTile) {
    tile(a.mem_k, a.mem_v, j0, std::min(kKeyTile, g.M - j0), a.mem_q != nullptr ? a.mem_q : a.q,
         a.dmq, /*memory=*/true);
  }
  if (a.db_part != nullptr) {
    float* part = a.db_part + (task / g.Hkv) * g.H + kvh * g.G;
    for (int64_t i = 0; i < g.G; ++i) part[i] = static_cast<float>(db[static_cast<size_t>(i)]);
  }
  const int64_t vis = t1 > t0 ? g.Visible(t1 - 1) : 0;
  for (int64_t j0 = 0; j0 < vis; j0 += kKeyTile) {
    tile(a.k, a.v, j0, std::min(kKeyTile, vis - j0), a.q, a.dq, /*memory=*/false);
  }
}

// Pass 2: dK and dV of local keys [s0, s1) = block task / Hkv (one key tile), kv head task % Hkv:
// walks every (query, head) that sees one of the block's keys, reading each q / dO row once for
// the block, and sums over the queries and the G heads that read the kv head, in query order.
template <class Tag>
void Pass2Task(const Geometry& g, const Args& a, int64_t task) {
  static_assert(kKeyBlock == kKeyTile, "pass 2 takes one key tile per task");
  const int64_t kvh = task % g.Hkv;
  const int64_t s0 = (task / g.Hkv) * kKeyBlock, s1 = std::min(g.S, s0 + kKeyBlock);
  const int64_t n = s1 - s0;
  std::vector<float> kt(static_cast<size_t>(g.d * kKeyTile)), vt(static_cast<size_t>(g.dv * kKeyTile));
  TransposeTile(a.k + kvh * g.d, g.Hkv * g.d, s0, n, g.d, kt.data());
  TransposeTile(a.v + kvh * g.dv, g.Hkv * g.dv, s0, n, g.dv, vt.data());
  std::vector<float> dk(static_cast<size_t>(n * g.d), 0.0f), dv(static_cast<size_t>(n * g.dv), 0.0f);
  float sc[kKeyTile], dp[kKeyTile];
  for (int64_t t = g.FirstQuery(s0); t < g.T; ++t) {
    const int64_t nv = std::min(s1, g.Visible(t)) - s0;  // keys of the block that t sees
    if (nv <= 0) continue;
    for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
      const int64_t row = t * g.H + h;
      const float* qr = a.q + row * g.d;
      const float* dor = a.dout + row * g.dv;
      const float l = a.lse[row], Dr = a.D[row];
      RowTimesTile<Tag>(qr, kt.data(), g.d, sc);
      RowTimesTile<Tag>(dor, vt.data(), g.dv, dp);
      // P, then scale · dS, over the whole tile (fixed trip counts vectorise at -O2); only
      // [0, nv) is used.
      for (int64_t jj = 0; jj < kKeyTile; ++jj) sc[jj] = ExpNonPositive(g.scale * sc[jj] - l);
      for (int64_t jj = 0; jj < nv; ++jj) Axpy<Tag>(sc[jj], dor, dv.data() + jj * g.dv, g.dv);
      for (int64_t jj = 0; jj < kKeyTile; ++jj) sc[jj] = g.scale * sc[jj] * (dp[jj] - Dr);
      for (int64_t jj = 0; jj < nv; ++jj) Axpy<Tag>(sc[jj], qr, dk.data() + jj * g.d, g.d);
    }
  }
  for (int64_t jj = 0; jj < n; ++jj) {
    std::copy(dk.begin() + jj * g.d, dk.begin() + (jj + 1) * g.d,
              a.dk + ((s0 + jj) * g.Hkv + kvh) * g.d);
    std::copy(dv.begin() + jj * g.dv, dv.begin() + (jj + 1) * g.dv,
              a.dv + ((s0 + jj) * g.Hkv + kvh) * g.dv);
  }
}

struct Kernels {
  void (*forward)(const Geometry&, const Args&, int64_t task);
  void (*pass1)(const Geometry&, const Args&, int64_t task);
  void (*pass2)(const Geometry&, const Args&, int64_t task);
};

Kernels ScalarKernels();  // attention_backward.cc
Kernels Avx2Kernels();    // attention_backward_avx2.cc
Kernels Avx512Kernels();  // attention_backward_avx512.cc

}  // namespace muninn::cpu::attn_train
