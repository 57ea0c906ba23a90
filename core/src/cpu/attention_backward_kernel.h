// Private to the CPU backend: the per-task bodies of the training attention (contract in
// attention_backward.h, driver in attention_backward.cc). They are templates on a tag type so
// that each ISA file instantiates its own copy with its own compiler flags (internal linkage
// through the file-local tag, as attention_kernel.h does); the loops are plain C++ and GCC vector
// extensions (16 floats) that compile to each target's vectors.
//
// Forward: per block of query rows and kv head, the keys in tiles of 64 with an online softmax.
// Backward (FlashAttention-2's two loops, keys in tiles of 64): P = exp(scale · q·k (+ b[h] for
// memory keys) - lse) is recomputed from the forward's lse, dP = dO · v, D = rowsum(dO ∘ O),
// dS = P ∘ (dP - D);
//   pass 1, per block of query rows and kv head:  dQ = scale · dS · K (memory keys: dMemQ), and
//                                                 the block's Σ dS over memory keys per head (db)
//   pass 2, per block of local keys and kv head:  dV = Pᵀ · dO, dK = scale · dSᵀ · Q
// Each task owns its output rows and sums in a fixed order: no atomics, and results that do not
// depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace muninn::cpu::attn_train {

inline constexpr int64_t kQueryBlock = 32;  // forward, pass 1: query rows per task (times G heads)
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

// Keys (or values) are handled in tiles of kKeyTile, transposed into [dim][kKeyTile] scratch so
// that a row's scores against the whole tile are FMAs over keys as vector lanes (no horizontal
// sums); columns past the tile's n keys are zero.
inline constexpr int64_t kKeyTile = 64;

// dst[i * kKeyTile + jj] = rows[(j0 + jj) * stride + i] for jj < n, i < dim; zero for jj >= n.
template <class Tag>
inline void TransposeTile(const float* rows, int64_t stride, int64_t j0, int64_t n, int64_t dim,
                          float* dst) {
  std::fill(dst, dst + dim * kKeyTile, 0.0f);
  for (int64_t jj = 0; jj < n; ++jj) {
    const float* src = rows + (j0 + jj) * stride;
    for (int64_t i = 0; i < dim; ++i) dst[i * kKeyTile + jj] = src[i];
  }
}

// 16 floats as one value (GCC's vector extension): the register-blocked loops below compile to
// zmm, ymm pairs or SSE quads in the AVX-512, AVX2 and baseline files alike.
using V16 = float __attribute__((vector_size(64)));
// GCC warns that a 64-byte vector argument or result changes the calling convention without
// AVX-512, at the end of each including ISA file (where the templates are instantiated), so the
// warning is off from here on; every function taking or returning one is always inlined and
// instantiated per ISA file (the Tag), so no such call crosses files.
#pragma GCC diagnostic ignored "-Wpsabi"
template <class Tag>
[[gnu::always_inline]] inline V16 LoadV(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class Tag>
[[gnu::always_inline]] inline void StoreV(float* p, V16 v) {
  std::memcpy(p, &v, sizeof v);
}

using I16 = int32_t __attribute__((vector_size(64)));

// e^x for x <= 0 on 16 lanes (std::exp in a loop does not vectorise without -ffast-math):
// x = n ln2 + r with |r| <= ln2/2 (n rounded by the 1.5 · 2^23 trick), e^r by its degree-7 Taylor
// polynomial (relative error < 2e-7 with float rounding), times 2^n built in the exponent field.
// Below -87 (masked keys) the result is exactly 0; x > 0 counts as 0.
template <class Tag>
[[gnu::always_inline]] inline V16 ExpV(V16 x) {
  const I16 keep = x >= -87.0f;
  const V16 lo = V16{} - 87.0f;
  x = keep ? x : lo;
  // Above 0 (float rounding of a score at the row's max, or the unused columns of a partial
  // tile) clamp to 0, so 2^n below never leaves the exponent field.
  x = x > 0.0f ? V16{} : x;
  const V16 n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  V16 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V16 p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I16 bits = (__builtin_convertvector(n, I16) + 127) << 23;
  const V16 res = p * __builtin_bit_cast(V16, bits);
  return __builtin_bit_cast(V16, __builtin_bit_cast(I16, res) & keep);
}

// row[jj] = e^(scale · row[jj] + add) for the tile's kKeyTile columns.
template <class Tag>
[[gnu::always_inline]] inline void ExpRow(float* row, float scale, float add) {
  for (int64_t jj = 0; jj < kKeyTile; jj += 16) {
    StoreV<Tag>(row + jj, ExpV<Tag>(LoadV<Tag>(row + jj) * scale + add));
  }
}

inline constexpr int kMaxRows = 4;  // rows (the G heads of one query) blocked together

// out[r][jj] = Σ_i x[r][i] · tile[i][jj] for R rows and the tile's kKeyTile columns: each
// transposed tile row is loaded once for the R rows, the R x 4 accumulators stay in registers.
template <class Tag, int R>
inline void RowsTimesTile(const float* const* x, const float* tile, int64_t dim,
                          float (*out)[kKeyTile]) {
  static_assert(kKeyTile == 64, "four vectors of 16 keys");
  V16 acc[R][4] = {};
  for (int64_t i = 0; i < dim; ++i) {
    const float* t = tile + i * kKeyTile;
    const V16 t0 = LoadV<Tag>(t), t1 = LoadV<Tag>(t + 16), t2 = LoadV<Tag>(t + 32),
              t3 = LoadV<Tag>(t + 48);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float xr = x[r][i];
      acc[r][0] += xr * t0;
      acc[r][1] += xr * t1;
      acc[r][2] += xr * t2;
      acc[r][3] += xr * t3;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int b = 0; b < 4; ++b) StoreV<Tag>(out[r] + 16 * b, acc[r][b]);
  }
}

// y[i] += Σ_r c[r] · x[r][i], i < n: y is loaded and stored once for the R rows.
template <class Tag, int R>
inline void AxpyRows(const float* c, const float* const* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    V16 acc = LoadV<Tag>(y + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc += c[r] * LoadV<Tag>(x[r] + i);
    StoreV<Tag>(y + i, acc);
  }
  for (; i < n; ++i) {
    float acc = y[i];
    for (int r = 0; r < R; ++r) acc += c[r] * x[r][i];
    y[i] = acc;
  }
}

// out[r][i] += scale · Σ_{jj < n} c[r][jj] · rows[jj · stride + i] for i < dim (R rows times
// n key rows): each key row chunk is loaded once for the R rows, accumulators in registers.
template <class Tag, int R>
inline void CoefTimesRows(const float (*c)[kKeyTile], const float* rows, int64_t stride, int64_t n,
                          int64_t dim, float scale, float* const* out) {
  int64_t i0 = 0;
  for (; i0 + 16 <= dim; i0 += 16) {
    V16 acc[R] = {};
    for (int64_t jj = 0; jj < n; ++jj) {
      const V16 k = LoadV<Tag>(rows + jj * stride + i0);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r] += c[r][jj] * k;
    }
    for (int r = 0; r < R; ++r) StoreV<Tag>(out[r] + i0, LoadV<Tag>(out[r] + i0) + scale * acc[r]);
  }
  for (; i0 < dim; ++i0) {
    for (int r = 0; r < R; ++r) {
      float acc = 0.0f;
      for (int64_t jj = 0; jj < n; ++jj) acc += c[r][jj] * rows[jj * stride + i0];
      out[r][i0] += scale * acc;
    }
  }
}

// The key tiles a query block [t0, t1) reads: fn(kbase, vbase, qbase, j0, n, memory) for the
// memory tiles (scored with mem_q when given), then the local tiles up to the block's last
// visible key.
template <class Fn>
inline void ForEachKeyTile(const Geometry& g, const Args& a, int64_t t0, int64_t t1, Fn&& fn) {
  for (int64_t j0 = 0; j0 < g.M; j0 += kKeyTile) {
    fn(a.mem_k, a.mem_v, a.mem_q != nullptr ? a.mem_q : a.q, j0, std::min(kKeyTile, g.M - j0),
       /*memory=*/true);
  }
  const int64_t vis = t1 > t0 ? g.Visible(t1 - 1) : 0;
  for (int64_t j0 = 0; j0 < vis; j0 += kKeyTile) {
    fn(a.k, a.v, a.q, j0, std::min(kKeyTile, vis - j0), /*memory=*/false);
  }
}

// fn(t, h0, R, nv) for every query t of [t0, t1) that sees nv > 0 of the tile's keys [j0, j0 + n)
// (all memory keys; local keys below Visible(t)) and every chunk h0 .. h0 + R (R <= kMaxRows) of
// kv head kvh's query heads.
template <class Fn>
inline void ForEachRowChunk(const Geometry& g, int64_t kvh, int64_t t0, int64_t t1, int64_t j0,
                            int64_t n, bool memory, Fn&& fn) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t nv = memory ? n : std::clamp<int64_t>(g.Visible(t) - j0, 0, n);
    if (nv == 0) continue;
    for (int64_t h0 = kvh * g.G; h0 < (kvh + 1) * g.G; h0 += kMaxRows) {
      fn(t, h0, std::min<int64_t>(kMaxRows, (kvh + 1) * g.G - h0), nv);
    }
  }
}

// Pass 1: dQ (and dMemQ) of query rows [t0, t1) = block task / Hkv, for the G heads of kv head
// task % Hkv. The block shares every key tile (transposed once); the G heads of one query are
// blocked together (up to kMaxRows at a time).
template <class Tag, int R>
void Pass1Rows(const Geometry& g, const Args& a, int64_t kvh, int64_t t, int64_t h0, bool memory,
               const float* kbase, int64_t j0, int64_t nv, const float* kt, const float* vt,
               const float* qbase, float* dqbase, double* db) {
  const float* qr[R];
  const float* dor[R];
  float* dqr[R];
  float sc[R][kKeyTile], dp[R][kKeyTile];
  for (int r = 0; r < R; ++r) {
    const int64_t row = t * g.H + h0 + r;
    qr[r] = qbase + row * g.d;
    dor[r] = a.dout + row * g.dv;
    dqr[r] = dqbase + row * g.d;
  }
  RowsTimesTile<Tag, R>(qr, kt, g.d, sc);
  RowsTimesTile<Tag, R>(dor, vt, g.dv, dp);
  for (int r = 0; r < R; ++r) {
    const int64_t row = t * g.H + h0 + r;
    const float bias = (memory && a.mem_bias != nullptr ? a.mem_bias[h0 + r] : 0.0f) - a.lse[row];
    const float Dr = a.D[row];
    // dS over the whole tile (fixed trip count: vectorised); only [0, nv) is used.
    ExpRow<Tag>(sc[r], g.scale, bias);
    for (int64_t jj = 0; jj < kKeyTile; ++jj) sc[r][jj] *= dp[r][jj] - Dr;
    if (memory && a.db_part != nullptr) {
      double db_row = 0.0;
      for (int64_t jj = 0; jj < nv; ++jj) db_row += sc[r][jj];
      db[h0 + r - kvh * g.G] += db_row;
    }
  }
  CoefTimesRows<Tag, R>(sc, kbase + (j0 * g.Hkv + kvh) * g.d, g.Hkv * g.d, nv, g.d, g.scale, dqr);
}

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
  std::vector<float> kt(static_cast<size_t>(g.d * kKeyTile)),
      vt(static_cast<size_t>(g.dv * kKeyTile));
  // Σ dS over this block's memory keys per head of the group, summed in (tile, query, key) order.
  std::vector<double> db(static_cast<size_t>(g.G), 0.0);
  ForEachKeyTile(g, a, t0, t1,
                 [&](const float* kbase, const float* vbase, const float* qbase, int64_t j0,
                     int64_t n, bool memory) {
                   TransposeTile<Tag>(kbase + kvh * g.d, g.Hkv * g.d, j0, n, g.d, kt.data());
                   TransposeTile<Tag>(vbase + kvh * g.dv, g.Hkv * g.dv, j0, n, g.dv, vt.data());
                   float* dqbase = memory ? a.dmq : a.dq;
                   ForEachRowChunk(g, kvh, t0, t1, j0, n, memory,
                                   [&](int64_t t, int64_t h0, int64_t R, int64_t nv) {
                                     auto* fn = R == 1   ? &Pass1Rows<Tag, 1>
                                                : R == 2 ? &Pass1Rows<Tag, 2>
                                                : R == 3 ? &Pass1Rows<Tag, 3>
                                                         : &Pass1Rows<Tag, 4>;
                                     fn(g, a, kvh, t, h0, memory, kbase, j0, nv, kt.data(),
                                        vt.data(), qbase, dqbase, db.data());
                                   });
                 });
  if (a.db_part != nullptr) {
    float* part = a.db_part + (task / g.Hkv) * g.H + kvh * g.G;
    for (int64_t i = 0; i < g.G; ++i) part[i] = static_cast<float>(db[static_cast<size_t>(i)]);
  }
}

// Forward for R heads (h0 .. h0 + R) of query t over one key tile's first nv keys: the online
// softmax's running max m, sum l and accumulator acc ([dv] per row) take the tile in.
template <class Tag, int R>
void ForwardRows(const Geometry& g, const Args& a, int64_t kvh, int64_t t, int64_t h0, bool memory,
                 const float* vbase, int64_t j0, int64_t nv, const float* kt, const float* qbase,
                 float* m, double* l, float* const* acc) {
  const float* qr[R];
  float p[R][kKeyTile];
  for (int r = 0; r < R; ++r) qr[r] = qbase + (t * g.H + h0 + r) * g.d;
  RowsTimesTile<Tag, R>(qr, kt, g.d, p);
  for (int r = 0; r < R; ++r) {
    const float bias = memory && a.mem_bias != nullptr ? a.mem_bias[h0 + r] : 0.0f;
    for (int64_t jj = 0; jj < kKeyTile; ++jj) p[r][jj] = g.scale * p[r][jj] + bias;
    float mx = m[r];
    for (int64_t jj = 0; jj < nv; ++jj) mx = std::max(mx, p[r][jj]);
    // Columns past nv are never read below; exp of the whole tile keeps the loop vectorised.
    ExpRow<Tag>(p[r], 1.0f, -mx);
    double sum = 0.0;
    for (int64_t jj = 0; jj < nv; ++jj) sum += p[r][jj];
    if (m[r] != mx) {  // the running max moved: rescale what was summed so far
      const float corr = m[r] == -std::numeric_limits<float>::infinity()
                             ? 0.0f
                             : ExpV<Tag>(V16{} + (m[r] - mx))[0];
      l[r] *= corr;
      for (int64_t i = 0; i < g.dv; ++i) acc[r][i] *= corr;
      m[r] = mx;
    }
    l[r] += sum;
  }
  CoefTimesRows<Tag, R>(p, vbase + (j0 * g.Hkv + kvh) * g.dv, g.Hkv * g.dv, nv, g.dv, 1.0f, acc);
}

// Forward: out and out_lse of query rows [t0, t1) = block task / Hkv, for the G heads of kv head
// task % Hkv, over key tiles (memory first, then the local keys) with an online softmax.
template <class Tag>
void ForwardTask(const Geometry& g, const Args& a, int64_t task) {
  const int64_t kvh = task % g.Hkv;
  const int64_t t0 = (task / g.Hkv) * kQueryBlock, t1 = std::min(g.T, t0 + kQueryBlock);
  const int64_t rows = (t1 - t0) * g.G;  // row (t - t0) · G + (h - kvh · G)
  std::vector<float> kt(static_cast<size_t>(g.d * kKeyTile));
  std::vector<float> m(static_cast<size_t>(rows), -std::numeric_limits<float>::infinity());
  std::vector<double> l(static_cast<size_t>(rows), 0.0);
  std::vector<float> acc(static_cast<size_t>(rows * g.dv), 0.0f);
  ForEachKeyTile(g, a, t0, t1,
                 [&](const float* kbase, const float* vbase, const float* qbase, int64_t j0,
                     int64_t n, bool memory) {
                   TransposeTile<Tag>(kbase + kvh * g.d, g.Hkv * g.d, j0, n, g.d, kt.data());
                   ForEachRowChunk(g, kvh, t0, t1, j0, n, memory,
                                   [&](int64_t t, int64_t h0, int64_t R, int64_t nv) {
                                     const int64_t r0 = (t - t0) * g.G + (h0 - kvh * g.G);
                                     float* accp[kMaxRows];
                                     for (int64_t r = 0; r < R; ++r)
                                       accp[r] = acc.data() + (r0 + r) * g.dv;
                                     auto* fn = R == 1   ? &ForwardRows<Tag, 1>
                                                : R == 2 ? &ForwardRows<Tag, 2>
                                                : R == 3 ? &ForwardRows<Tag, 3>
                                                         : &ForwardRows<Tag, 4>;
                                     fn(g, a, kvh, t, h0, memory, vbase, j0, nv, kt.data(), qbase,
                                        m.data() + r0, l.data() + r0, accp);
                                   });
                 });
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t h = kvh * g.G; h < (kvh + 1) * g.G; ++h) {
      const int64_t r = (t - t0) * g.G + (h - kvh * g.G), row = t * g.H + h;
      const double lr = l[static_cast<size_t>(r)];
      const auto inv = static_cast<float>(1.0 / lr);
      for (int64_t i = 0; i < g.dv; ++i) a.out[row * g.dv + i] = acc[r * g.dv + i] * inv;
      a.out_lse[row] = m[static_cast<size_t>(r)] + static_cast<float>(std::log(lr));
    }
  }
}

// Pass 2 for R heads (h0 .. h0 + R) of query t over the block's first nv keys: adds to the
// block's dk ([kKeyTile, d]) and dv ([kKeyTile, dv]) accumulators.
template <class Tag, int R>
void Pass2Rows(const Geometry& g, const Args& a, int64_t t, int64_t h0, int64_t nv, const float* kt,
               const float* vt, float* dk, float* dv) {
  const float* qr[R];
  const float* dor[R];
  float p[R][kKeyTile], dp[R][kKeyTile];
  for (int r = 0; r < R; ++r) {
    const int64_t row = t * g.H + h0 + r;
    qr[r] = a.q + row * g.d;
    dor[r] = a.dout + row * g.dv;
  }
  RowsTimesTile<Tag, R>(qr, kt, g.d, p);
  RowsTimesTile<Tag, R>(dor, vt, g.dv, dp);
  for (int r = 0; r < R; ++r) {  // P, and scale · dS in dp (fixed trip counts: vectorised)
    const int64_t row = t * g.H + h0 + r;
    const float l = a.lse[row], Dr = a.D[row];
    ExpRow<Tag>(p[r], g.scale, -l);
    for (int64_t jj = 0; jj < kKeyTile; ++jj) dp[r][jj] = g.scale * p[r][jj] * (dp[r][jj] - Dr);
  }
  for (int64_t jj = 0; jj < nv; ++jj) {
    float cp[R], cs[R];
    for (int r = 0; r < R; ++r) {
      cp[r] = p[r][jj];
      cs[r] = dp[r][jj];
    }
    AxpyRows<Tag, R>(cp, dor, dv + jj * g.dv, g.dv);
    AxpyRows<Tag, R>(cs, qr, dk + jj * g.d, g.d);
  }
}

// Pass 2: dK and dV of local keys [s0, s1) = block task / Hkv (one key tile), kv head task % Hkv:
// walks every query that sees one of the block's keys, its G heads blocked together, and sums over
// the queries and the heads that read the kv head, in query order.
template <class Tag>
void Pass2Task(const Geometry& g, const Args& a, int64_t task) {
  static_assert(kKeyBlock == kKeyTile, "pass 2 takes one key tile per task");
  const int64_t kvh = task % g.Hkv;
  const int64_t s0 = (task / g.Hkv) * kKeyBlock, s1 = std::min(g.S, s0 + kKeyBlock);
  const int64_t n = s1 - s0;
  std::vector<float> kt(static_cast<size_t>(g.d * kKeyTile)),
      vt(static_cast<size_t>(g.dv * kKeyTile));
  TransposeTile<Tag>(a.k + kvh * g.d, g.Hkv * g.d, s0, n, g.d, kt.data());
  TransposeTile<Tag>(a.v + kvh * g.dv, g.Hkv * g.dv, s0, n, g.dv, vt.data());
  std::vector<float> dk(static_cast<size_t>(n * g.d), 0.0f),
      dv(static_cast<size_t>(n * g.dv), 0.0f);
  for (int64_t t = g.FirstQuery(s0); t < g.T; ++t) {
    const int64_t nv = std::min(s1, g.Visible(t)) - s0;  // keys of the block that t sees
    if (nv <= 0) continue;
    for (int64_t h0 = kvh * g.G; h0 < (kvh + 1) * g.G; h0 += kMaxRows) {
      switch (std::min<int64_t>(kMaxRows, (kvh + 1) * g.G - h0)) {
        case 1:
          Pass2Rows<Tag, 1>(g, a, t, h0, nv, kt.data(), vt.data(), dk.data(), dv.data());
          break;
        case 2:
          Pass2Rows<Tag, 2>(g, a, t, h0, nv, kt.data(), vt.data(), dk.data(), dv.data());
          break;
        case 3:
          Pass2Rows<Tag, 3>(g, a, t, h0, nv, kt.data(), vt.data(), dk.data(), dv.data());
          break;
        default:
          Pass2Rows<Tag, 4>(g, a, t, h0, nv, kt.data(), vt.data(), dk.data(), dv.data());
          break;
      }
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
