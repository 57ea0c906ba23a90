// Private to the CPU backend: the tiled online-softmax ("flash") attention kernel behind
// AttentionOp (attention.cc), shared by the scalar, AVX2 and AVX-512 paths.
//
// How the work is cut (the driver in attention.cc):
//  - A *block* is up to tq consecutive queries times the G = n_head / n_head_kv query heads that
//    share one kv head, so every key and value loaded is used by all G heads (grouped-query
//    attention). Row r of a block is query t0 + r / G, head g * G + r % G.
//  - Keys are visited in tiles of kKeyTile, memory block first (scored with its own queries when
//    AttentionParams::mem_q is given: a second QueryBlock per head), then local keys; each tile
//    updates a running (max m, sum l, accumulator acc) per row, so one softmax runs over
//    [memory ; local] without ever materialising more than a [kKeyTile, rows] block of scores.
//  - When there are few blocks (decode: T = 1), the key range is also split across tasks and the
//    partial (m, l, acc) states are merged afterwards, so every thread streams part of K and V;
//    such a task walks all kv heads of its tiles, so K/V rows are read whole, not head-strided.
//
// The tile kernel itself is written once, as templates over an ISA "traits" type that wraps one
// vector register type (see AttendTile below); attention.cc instantiates it with a scalar traits
// type, attention_avx2.cc / attention_avx512.cc with their intrinsics. The traits types live in
// anonymous namespaces, so every instantiation has internal linkage: code compiled with AVX-512
// flags can never be picked by the linker for a baseline caller.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <limits>

#include "muninn/core/dtype.h"
#include "muninn/core/quant.h"

namespace muninn::cpu::attn {

inline constexpr int kKeyTile = 64;   // keys per tile
inline constexpr int kPad = 16;       // rows, d and dv are padded to a multiple of this (16 floats,
                                      // the widest vector), so kernels only do whole vectors
inline constexpr int kTargetRows = 64;        // query rows per block (tq * G), when T allows
inline constexpr int64_t kMinSplitKeys = 256;  // a key split below this is not worth a merge

// One block of query rows sharing a kv head, prepared by the driver for every tile call.
struct QueryBlock {
  const float* q;   // [rows, dp] query rows times the softmax scale, zero-padded to dp
  const float* qt;  // [d, rp] the same values transposed, rows zero-padded to rp
  int rows;         // real rows (<= rp)
  int64_t rp;       // rows rounded up to kPad
  int64_t d, dp;    // key/query head dim and its padded size
  int64_t dv, dvp;  // value head dim and its padded size
  // [rp] added to every score of the tile, zero-padded (the memory tiles' per-head logit bias,
  // AttentionParams::mem_bias); null: none.
  const float* bias = nullptr;
};

// Up to kKeyTile consecutive keys of one kv head: key j at k + j * k_stride ([d] elements of
// k_dtype, packed), value j at v + j * v_stride ([dv] elements of v_dtype). Dtypes: f32, f16, or
// q8_0 (GGUF's blocks of 32 int8 with one f16 scale, 34 bytes; the head dim a multiple of 32).
struct KeyTile {
  const char* k;
  int64_t k_stride;
  DType k_dtype;
  const char* v;
  int64_t v_stride;
  DType v_dtype;
  int n;               // 1..kKeyTile
  const int* visible;  // [rows] row r sees keys [0, visible[r]) of this tile; null: all n
};

// Per-thread scratch, sized by AttentionPlan::workspace_floats.
struct TileScratch {
  float* kf;    // [kKeyTile, dp]  keys converted to f32, zero-padded
  float* vf;    // [kKeyTile, dvp] values converted to f32, zero-padded
  float* p;     // [kKeyTile, rp]  scores, then exp(score - m): key-major, one column per row
  float* corr;  // [rp]            exp(m_old - m_new) of the last tile
};

// The running online-softmax state of a block.
struct RunState {
  float* m;    // [rp]       running max of the scores seen (-inf before any key)
  float* l;    // [rp]       running sum of exp(score - m)
  float* acc;  // [rp, dvp]  running sum of exp(score - m) * v
};

// Folds one key tile into the running state of a block.
using AttendTileFn = void (*)(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                              const RunState& st);
void AttendTileScalar(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                      const RunState& st);  // attention.cc
void AttendTileAvx2(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                    const RunState& st);  // attention_avx2.cc
void AttendTileAvx512(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                      const RunState& st);  // attention_avx512.cc

// How AttentionOp cuts a problem; every buffer it allocates is sized here, which is what lets
// tests check that memory stays O(tile), independent of the number of keys.
struct AttentionPlan {
  int64_t group = 1;         // G = n_head / n_head_kv
  int64_t tq = 1;            // queries per block
  int64_t rows_max = 1;      // tq * G
  int64_t rp_max = kPad;     // rows_max rounded up to kPad
  int64_t dp = kPad;         // d rounded up
  int64_t dvp = kPad;        // dv rounded up
  int64_t n_qtiles = 0;      // ceil(T / tq)
  int64_t heads_per_task = 1;  // kv heads (blocks) one task walks together: 1, or all when split
  int64_t n_items = 0;       // n_qtiles * n_head_kv / heads_per_task
  int64_t n_split = 1;       // key splits per item (> 1 only when blocks are fewer than threads)
  int64_t split_keys = 0;    // keys per split, a multiple of kKeyTile ([memory ; local] indices)
  int64_t state_floats = 0;  // one block's running state: m, l ([rp_max] each), acc ([rp_max, dvp])
  int64_t query_floats = 0;  // one block's queries: q [rows_max, dp] and qt [d, rp_max]
  bool separate_mem_q = false;  // memory tiles use their own queries (AttentionParams::mem_q)
  int64_t workspace_floats = 0;  // per running thread
  int64_t workspace_ints = 0;    // per running thread
  int64_t partial_floats = 0;    // shared, for the split states (0 when n_split == 1)
};

// `separate_mem_q`: the memory block has its own queries (a second q/qt per head; only when M > 0).
AttentionPlan PlanAttention(int64_t T, int64_t S, int64_t M, int64_t n_head, int64_t n_head_kv,
                            int64_t d, int64_t dv, int num_threads, bool separate_mem_q = false);

// ---------------------------------------------------------------------------------------------
// The tile kernel, generic over an ISA traits type A that provides:
//   using V (a vector of kW floats); kW; kMaxRb, kMaxNv (register blocking limits);
//   Zero, Set1, Load, Store (unaligned), Fma(a, b, c) = a * b + c, Mul, Add, Sub, Max,
//   ReduceAdd (sum of lanes), kScoreKeys (4: ReduceAdd4(const V a[4], float out[4]) writes the
//   four vectors' lane sums; else 2), Exp (e^x for x <= 0, exactly 0 below -87 and for -inf),
//   ZeroIfNegInf, LoadF16 (kW halves), LoadF16Partial (count < kW halves, rest 0), LoadI8 (kW
//   int8 as floats), Set1F16 (one half, converted and broadcast).

// How a K or V row is stored: f32, f16, or q8_0 blocks.
enum class KvFmt { kF32, kF16, kQ8 };
inline constexpr int64_t kQ8Block = kQK;                     // elements per q8_0 block
inline constexpr int64_t kQ8BlockBytes = sizeof(BlockQ8_0);  // its f16 scale, then the int8

inline KvFmt KvFmtOf(DType d) {
  return d == DType::kF16 ? KvFmt::kF16 : d == DType::kQ8_0 ? KvFmt::kQ8 : KvFmt::kF32;
}

// Bytes of the first `n` elements of a row (n a multiple of kQ8Block for q8_0).
inline constexpr int64_t KvRowBytes(KvFmt f, int64_t n) {
  return f == KvFmt::kF32 ? 4 * n : f == KvFmt::kF16 ? 2 * n : n / kQ8Block * kQ8BlockBytes;
}

// W floats of a row from column c, which must leave a whole vector inside the row (for q8_0 it
// does whenever c < len: len is a multiple of 32 and W divides 32).
template <class A, KvFmt F>
[[gnu::always_inline]] inline typename A::V LoadExact(const char* row, int64_t c) {
  if constexpr (F == KvFmt::kF16) {
    return A::LoadF16(reinterpret_cast<const uint16_t*>(row) + c);
  } else if constexpr (F == KvFmt::kQ8) {
    static_assert(kQ8Block % A::kW == 0, "a vector must not straddle two q8_0 blocks");
    const char* block = row + c / kQ8Block * kQ8BlockBytes;
    uint16_t scale;
    std::memcpy(&scale, block, sizeof scale);
    return A::Mul(A::LoadI8(reinterpret_cast<const int8_t*>(block + offsetof(BlockQ8_0, qs)) + c % kQ8Block),
                  A::Set1F16(scale));
  } else {
    return A::Load(reinterpret_cast<const float*>(row) + c);
  }
}

template <class A>
void ConvertRows(const char* src, int64_t stride, DType dtype, int n, int64_t len, int64_t lenp,
                 float* dst) {
  constexpr int W = A::kW;
  for (int j = 0; j < n; ++j) {
    const char* row = src + j * stride;
    float* out = dst + j * lenp;
    int64_t c = 0;
    if (dtype == DType::kQ8_0) {
      DequantizeRow(dtype, row, out, len);  // len is whole blocks
      c = len;
    } else if (dtype == DType::kF32) {
      const float* s = reinterpret_cast<const float*>(row);
      for (; c + W <= len; c += W) A::Store(out + c, A::Load(s + c));
      for (; c < len; ++c) out[c] = s[c];
    } else {
      const uint16_t* s = reinterpret_cast<const uint16_t*>(row);
      for (; c + W <= len; c += W) A::Store(out + c, A::LoadF16(s + c));
      if (c < len) {  // lenp is a multiple of W, so a whole vector still fits
        A::Store(out + c, A::LoadF16Partial(s + c, static_cast<int>(len - c)));
        c += W;
      }
    }
    for (; c < lenp; ++c) out[c] = 0.0f;
  }
}

// Few rows (decode): one dot product per (key, row), reduced across lanes.
template <class A>
void ScoresByKey(const QueryBlock& qb, int n, const float* kf, float* p) {
  constexpr int W = A::kW;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < n; ++j) {
    const float* kj = kf + j * qb.dp;
    float* pj = p + j * qb.rp;
    for (int r = 0; r < qb.rows; ++r) {
      const float* qr = qb.q + r * qb.dp;
      typename A::V acc = A::Zero();
      for (int64_t c = 0; c < qb.dp; c += W) acc = A::Fma(A::Load(qr + c), A::Load(kj + c), acc);
      pj[r] = A::ReduceAdd(acc);
    }
    for (int64_t r = qb.rows; r < qb.rp; ++r) pj[r] = kNegInf;
  }
}

// Many rows (prefill): JB keys x RB row-vectors of scores, q transposed so rows are lanes.
template <class A, int JB, int RB>
void ScoresMicro(const QueryBlock& qb, const float* kf, int j0, int64_t r0, float* p) {
  using V = typename A::V;
  constexpr int W = A::kW;
  V acc[JB][RB];
  for (int a = 0; a < JB; ++a) {
    for (int b = 0; b < RB; ++b) acc[a][b] = A::Zero();
  }
  const float* kbase = kf + j0 * qb.dp;
  for (int64_t i = 0; i < qb.d; ++i) {
    V qv[RB];
    for (int b = 0; b < RB; ++b) qv[b] = A::Load(qb.qt + i * qb.rp + r0 + b * W);
    for (int a = 0; a < JB; ++a) {
      const V kv = A::Set1(kbase[a * qb.dp + i]);
      for (int b = 0; b < RB; ++b) acc[a][b] = A::Fma(kv, qv[b], acc[a][b]);
    }
  }
  for (int a = 0; a < JB; ++a) {
    for (int b = 0; b < RB; ++b) A::Store(p + (j0 + a) * qb.rp + r0 + b * W, acc[a][b]);
  }
}

template <class A, int JB>
void ScoresRowsForKeys(const QueryBlock& qb, const float* kf, int j0, float* p) {
  constexpr int W = A::kW;
  constexpr int RB = A::kMaxRb;
  int64_t r0 = 0;
  for (; r0 + RB * W <= qb.rp; r0 += RB * W) ScoresMicro<A, JB, RB>(qb, kf, j0, r0, p);
  for (; r0 < qb.rp; r0 += W) ScoresMicro<A, JB, 1>(qb, kf, j0, r0, p);
}

template <class A>
void ScoresByRowVector(const QueryBlock& qb, int n, const float* kf, float* p) {
  int j = 0;
  for (; j + 4 <= n; j += 4) ScoresRowsForKeys<A, 4>(qb, kf, j, p);
  for (; j < n; ++j) ScoresRowsForKeys<A, 1>(qb, kf, j, p);
}

// acc[r0 .. r0+RB) [x0 .. x0 + NV*W) += p[j][r] * vf[j][...] over the tile's keys.
template <class A, int RB, int NV>
void PvMicro(const QueryBlock& qb, int n, const float* p, const float* vf, int r0, int64_t x0,
             float* acc) {
  using V = typename A::V;
  constexpr int W = A::kW;
  V a[RB][NV];
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < NV; ++b) a[r][b] = A::Load(acc + (r0 + r) * qb.dvp + x0 + b * W);
  }
  for (int j = 0; j < n; ++j) {
    V v[NV];
    for (int b = 0; b < NV; ++b) v[b] = A::Load(vf + j * qb.dvp + x0 + b * W);
    const float* pj = p + j * qb.rp + r0;
    for (int r = 0; r < RB; ++r) {
      const V pr = A::Set1(pj[r]);
      for (int b = 0; b < NV; ++b) a[r][b] = A::Fma(pr, v[b], a[r][b]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < NV; ++b) A::Store(acc + (r0 + r) * qb.dvp + x0 + b * W, a[r][b]);
  }
}

template <class A, int RB>
void PvRows(const QueryBlock& qb, int n, const float* p, const float* vf, int r0, float* acc) {
  constexpr int W = A::kW;
  constexpr int NV = A::kMaxNv;
  int64_t x0 = 0;
  for (; x0 + NV * W <= qb.dvp; x0 += NV * W) PvMicro<A, RB, NV>(qb, n, p, vf, r0, x0, acc);
  for (; x0 < qb.dvp; x0 += W) PvMicro<A, RB, 1>(qb, n, p, vf, r0, x0, acc);
}

// ---------------------------------------------------------------------------------------------
// The few-rows path (decode: T = 1, so a block is just the G heads sharing a kv head). The general
// tile above spends its work on rows as vector lanes (16 lanes for G = 3 real rows), converts the
// tile's K and V to f32 scratch first and runs the softmax's exp on every padded lane; here keys
// are the lanes instead: K and V rows are converted in registers as they are used, scores are
// kept row-major (p[r][j]) so the max, the exp and the sum each take n / W vectors per row, and
// every converted key or value row is used by all R rows of the block.

inline constexpr int kFewRows = 4;  // blocks of up to this many rows take the few-rows path

// W floats of a K or V row (stored as F) starting at column c, zero past `len`.
template <class A, KvFmt F>
[[gnu::always_inline]] inline typename A::V LoadRowVector(const char* row, int64_t c, int64_t len) {
  constexpr int W = A::kW;
  if (c >= len) return A::Zero();  // a chunk of the padding (dv < dvp)
  if constexpr (F == KvFmt::kQ8) {
    return LoadExact<A, F>(row, c);  // len is a multiple of 32: the vector is whole
  } else if constexpr (F == KvFmt::kF32) {
    const float* s = reinterpret_cast<const float*>(row) + c;
    if (c + W <= len) return A::Load(s);
    float tmp[W] = {};
    for (int64_t i = 0; i < len - c; ++i) tmp[i] = s[i];
    return A::Load(tmp);
  } else {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(row) + c;
    if (c + W <= len) return A::LoadF16(s);
    return A::LoadF16Partial(s, static_cast<int>(len - c));
  }
}

// p[r * kKeyTile + j] = q_r . k_j for the R rows of the block and the tile's n keys.
template <class A, int R, KvFmt F>
void FewRowScores(const QueryBlock& qb, const KeyTile& tile, float* p) {
  using V = typename A::V;
  constexpr int W = A::kW;
  for (int j = 0; j < tile.n; ++j) {
    const char* krow = tile.k + j * tile.k_stride;
    V acc[R];
    for (int r = 0; r < R; ++r) acc[r] = A::Zero();
    for (int64_t c = 0; c < qb.d; c += W) {
      const V kv = LoadRowVector<A, F>(krow, c, qb.d);
      for (int r = 0; r < R; ++r) acc[r] = A::Fma(A::Load(qb.q + r * qb.dp + c), kv, acc[r]);
    }
    for (int r = 0; r < R; ++r) p[r * kKeyTile + j] = A::ReduceAdd(acc[r]);
  }
}

// The same two steps when d and dv are whole vectors (dp == d, dvp == dv: head dims that are
// multiples of 16, e.g. 64): no bounds checks, so the compiler keeps the accumulators in
// registers; scores take two keys per step so two rows' loads are in flight at once.
// Decode reads K and V once, from DRAM: each row's lines are requested this many rows ahead.
inline constexpr int kPrefetchRows = 24;

// Prefetches the `bytes` of one head's row (at most 4 lines; head dims up to 128 f16 / 64 f32).
[[gnu::always_inline]] inline void PrefetchRow(const char* row, int64_t bytes) {
  for (int64_t b = 0; b < bytes && b < 256; b += 64) __builtin_prefetch(row + b, 0, 3);
}

template <class A, int R, int ND, KvFmt F>
void FewRowScoresExact(const QueryBlock& qb, const KeyTile& tile, float* p) {
  using V = typename A::V;
  constexpr int W = A::kW;
  constexpr int64_t kRowBytes = KvRowBytes(F, ND * W);
  int j = 0;
  if constexpr (A::kScoreKeys == 4) {
    // Four keys at a time: R x 4 accumulators, then one transposing reduction per row that sums
    // the four keys' vectors together (a handful of shuffles for four scores, instead of one
    // full horizontal sum per key and row).
    for (; j + 4 <= tile.n; j += 4) {
      const char* k0 = tile.k + j * tile.k_stride;
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        PrefetchRow(k0 + (kPrefetchRows + k) * tile.k_stride, kRowBytes);
      }
      V a[R][4];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) a[r][k] = A::Zero();
      }
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) {
        V x[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) x[k] = LoadExact<A, F>(k0 + k * tile.k_stride, c * W);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const V qv = A::Load(qb.q + r * qb.dp + c * W);
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) a[r][k] = A::Fma(qv, x[k], a[r][k]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) A::ReduceAdd4(a[r], p + r * kKeyTile + j);
    }
  }
  for (; j + 2 <= tile.n; j += 2) {
    const char* k0 = tile.k + j * tile.k_stride;
    const char* k1 = k0 + tile.k_stride;
    PrefetchRow(k0 + kPrefetchRows * tile.k_stride, kRowBytes);
    PrefetchRow(k1 + kPrefetchRows * tile.k_stride, kRowBytes);
    V a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = A::Zero();
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) {
      const V x0 = LoadExact<A, F>(k0, c * W);
      const V x1 = LoadExact<A, F>(k1, c * W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const V qv = A::Load(qb.q + r * qb.dp + c * W);
        a0[r] = A::Fma(qv, x0, a0[r]);
        a1[r] = A::Fma(qv, x1, a1[r]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      p[r * kKeyTile + j] = A::ReduceAdd(a0[r]);
      p[r * kKeyTile + j + 1] = A::ReduceAdd(a1[r]);
    }
  }
  if (j < tile.n) {
    const char* k0 = tile.k + j * tile.k_stride;
    V a0[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = A::Zero();
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) {
      const V x0 = LoadExact<A, F>(k0, c * W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) a0[r] = A::Fma(A::Load(qb.q + r * qb.dp + c * W), x0, a0[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) p[r * kKeyTile + j] = A::ReduceAdd(a0[r]);
  }
}

// acc_r[x0, x0 + NV*W) += sum_j p[r][j] * v_j[x0, ...) for the R rows. kExact: dv == dvp (every
// chunk whole), so rows load without bounds checks and the accumulators stay in registers.
template <class A, int R, int NV, KvFmt F, bool kExact>
void FewRowPv(const QueryBlock& qb, const KeyTile& tile, const float* p, int64_t x0, float* acc) {
  using V = typename A::V;
  constexpr int W = A::kW;
  V a[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) a[r][b] = A::Load(acc + r * qb.dvp + x0 + b * W);
  }
  for (int j = 0; j < tile.n; ++j) {
    const char* vrow = tile.v + j * tile.v_stride;
    if (x0 == 0) PrefetchRow(vrow + kPrefetchRows * tile.v_stride, KvRowBytes(F, qb.dv));
    V v[NV];
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) {
      if constexpr (kExact) {
        v[b] = LoadExact<A, F>(vrow, x0 + b * W);
      } else {
        v[b] = LoadRowVector<A, F>(vrow, x0 + b * W, qb.dv);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V pr = A::Set1(p[r * kKeyTile + j]);
#pragma GCC unroll 8
      for (int b = 0; b < NV; ++b) a[r][b] = A::Fma(pr, v[b], a[r][b]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int b = 0; b < NV; ++b) A::Store(acc + r * qb.dvp + x0 + b * W, a[r][b]);
  }
}

template <class A, int R, KvFmt F>
void FewRowPvAll(const QueryBlock& qb, const KeyTile& tile, const float* p, float* acc) {
  constexpr int W = A::kW;
  constexpr int NV = A::kMaxNv;
  int64_t x0 = 0;
  if (qb.dvp == qb.dv) {
    for (; x0 + NV * W <= qb.dvp; x0 += NV * W) {
      FewRowPv<A, R, NV, F, true>(qb, tile, p, x0, acc);
    }
    for (; x0 < qb.dvp; x0 += W) FewRowPv<A, R, 1, F, true>(qb, tile, p, x0, acc);
    return;
  }
  for (; x0 + NV * W <= qb.dvp; x0 += NV * W) {
    FewRowPv<A, R, NV, F, false>(qb, tile, p, x0, acc);
  }
  for (; x0 < qb.dvp; x0 += W) FewRowPv<A, R, 1, F, false>(qb, tile, p, x0, acc);
}

// Scores for keys stored as F: the unrolled path when a key row is 4 or 8 whole vectors.
template <class A, int R, KvFmt F>
void FewRowScoresFor(const QueryBlock& qb, const KeyTile& tile, int64_t nd, float* p) {
  if (nd == 4) {
    FewRowScoresExact<A, R, 4, F>(qb, tile, p);
  } else if (nd == 8) {
    FewRowScoresExact<A, R, 8, F>(qb, tile, p);
  } else {
    FewRowScores<A, R, F>(qb, tile, p);
  }
}

template <class A, int R>
void AttendTileFewRows(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                       const RunState& st) {
  using V = typename A::V;
  constexpr int W = A::kW;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int n = tile.n;
  // Whole vectors of keys per row; the columns [n, nw) are -inf (exp gives 0 there).
  const int nw = (n + W - 1) / W * W;  // <= kKeyTile (a multiple of every W)
  float* p = sc.p;                     // [R, kKeyTile]: fits, kKeyTile * rp >= R * kKeyTile
  const int64_t nd = qb.dp == qb.d ? qb.d / W : 0;  // whole vectors per key row, 0: not exact
  switch (KvFmtOf(tile.k_dtype)) {
    case KvFmt::kF16:
      FewRowScoresFor<A, R, KvFmt::kF16>(qb, tile, nd, p);
      break;
    case KvFmt::kQ8:
      FewRowScoresFor<A, R, KvFmt::kQ8>(qb, tile, nd, p);
      break;
    case KvFmt::kF32:
      FewRowScoresFor<A, R, KvFmt::kF32>(qb, tile, nd, p);
      break;
  }
  if (qb.bias != nullptr) {  // the memory tiles' per-head logit bias
    for (int r = 0; r < R; ++r) {
      const V b = A::Set1(qb.bias[r]);
      float* pr = p + r * kKeyTile;
      for (int j = 0; j < nw; j += W) A::Store(pr + j, A::Add(A::Load(pr + j), b));
    }
  }
  for (int r = 0; r < R; ++r) {
    const int vis = tile.visible != nullptr ? tile.visible[r] : n;
    std::fill(p + r * kKeyTile + vis, p + r * kKeyTile + nw, kNegInf);
  }
  // Online softmax per row, keys as lanes.
  for (int r = 0; r < R; ++r) {
    float* pr = p + r * kKeyTile;
    V mx = A::Set1(kNegInf);
    for (int j = 0; j < nw; j += W) mx = A::Max(mx, A::Load(pr + j));
    float tile_max = kNegInf;
    {
      float lanes[W];
      A::Store(lanes, mx);
      for (int i = 0; i < W; ++i) tile_max = lanes[i] > tile_max ? lanes[i] : tile_max;
    }
    const float m_old = st.m[r];
    const float m_new = m_old > tile_max ? m_old : tile_max;
    // A row that has seen no key yet keeps m = -inf; exp's argument then stays -inf (-> 0).
    const float m_ref = m_new == kNegInf ? 0.0f : m_new;
    const V mv = A::Set1(m_ref);
    V sum = A::Zero();
    for (int j = 0; j < nw; j += W) {
      const V e = A::Exp(A::Sub(A::Load(pr + j), mv));
      A::Store(pr + j, e);
      sum = A::Add(sum, e);
    }
    float corr_lane[W];
    A::Store(corr_lane, A::Exp(A::Set1(m_old - m_ref)));
    const float corr = corr_lane[0];
    st.l[r] = st.l[r] * corr + A::ReduceAdd(sum);
    st.m[r] = m_new;
    if (corr != 1.0f) {
      const V cv = A::Set1(corr);
      float* ar = st.acc + r * qb.dvp;
      for (int64_t x = 0; x < qb.dvp; x += W) A::Store(ar + x, A::Mul(A::Load(ar + x), cv));
    }
  }
  // acc += p . V, in column chunks of kMaxNv vectors (the accumulators stay in registers).
  switch (KvFmtOf(tile.v_dtype)) {
    case KvFmt::kF16:
      FewRowPvAll<A, R, KvFmt::kF16>(qb, tile, p, st.acc);
      break;
    case KvFmt::kQ8:
      FewRowPvAll<A, R, KvFmt::kQ8>(qb, tile, p, st.acc);
      break;
    case KvFmt::kF32:
      FewRowPvAll<A, R, KvFmt::kF32>(qb, tile, p, st.acc);
      break;
  }
}

template <class A>
void AttendTile(const QueryBlock& qb, const KeyTile& tile, const TileScratch& sc,
                const RunState& st) {
  static_assert(kFewRows <= kPad, "the few-rows scores use the [kKeyTile, rp] scratch");
  switch (qb.rows) {
    case 1: return AttendTileFewRows<A, 1>(qb, tile, sc, st);
    case 2: return AttendTileFewRows<A, 2>(qb, tile, sc, st);
    case 3: return AttendTileFewRows<A, 3>(qb, tile, sc, st);
    case 4: return AttendTileFewRows<A, 4>(qb, tile, sc, st);
    default: break;
  }
  using V = typename A::V;
  constexpr int W = A::kW;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int n = tile.n;
  ConvertRows<A>(tile.k, tile.k_stride, tile.k_dtype, n, qb.d, qb.dp, sc.kf);
  ConvertRows<A>(tile.v, tile.v_stride, tile.v_dtype, n, qb.dv, qb.dvp, sc.vf);

  // Scores p[j][r] = q_r . k_j (the scale is already in q).
  if (qb.rows * 2 <= W) {
    ScoresByKey<A>(qb, n, sc.kf, sc.p);
  } else {
    ScoresByRowVector<A>(qb, n, sc.kf, sc.p);
  }
  if (qb.bias != nullptr) {
    for (int j = 0; j < n; ++j) {
      float* pj = sc.p + j * qb.rp;
      for (int64_t c = 0; c < qb.rp; c += W) {
        A::Store(pj + c, A::Add(A::Load(pj + c), A::Load(qb.bias + c)));
      }
    }
  }
  if (tile.visible != nullptr) {  // causal mask: row r sees a prefix of the tile
    for (int r = 0; r < qb.rows; ++r) {
      for (int j = tile.visible[r]; j < n; ++j) sc.p[j * qb.rp + r] = kNegInf;
    }
  }

  // Online softmax, rows as lanes: new max, correction of the old state, p = exp(s - m).
  for (int64_t c = 0; c < qb.rp; c += W) {
    V mx = A::Set1(kNegInf);
    for (int j = 0; j < n; ++j) mx = A::Max(mx, A::Load(sc.p + j * qb.rp + c));
    const V m_old = A::Load(st.m + c);
    const V m_new = A::Max(m_old, mx);
    // A row that has seen no key yet keeps m = -inf; subtracting 0 instead keeps exp's argument
    // -inf (-> 0) rather than NaN.
    const V m_ref = A::ZeroIfNegInf(m_new);
    const V corr = A::Exp(A::Sub(m_old, m_ref));
    V sum = A::Zero();
    for (int j = 0; j < n; ++j) {
      float* pj = sc.p + j * qb.rp + c;
      const V e = A::Exp(A::Sub(A::Load(pj), m_ref));
      A::Store(pj, e);
      sum = A::Add(sum, e);
    }
    A::Store(st.l + c, A::Fma(A::Load(st.l + c), corr, sum));
    A::Store(st.m + c, m_new);
    A::Store(sc.corr + c, corr);
  }
  for (int r = 0; r < qb.rows; ++r) {
    const float cr = sc.corr[r];
    if (cr == 1.0f) continue;  // the max did not move: the common case after the first tiles
    const V cv = A::Set1(cr);
    float* ar = st.acc + r * qb.dvp;
    for (int64_t x = 0; x < qb.dvp; x += W) A::Store(ar + x, A::Mul(A::Load(ar + x), cv));
  }

  // acc += p . V
  int r0 = 0;
  for (; r0 + 4 <= qb.rows; r0 += 4) PvRows<A, 4>(qb, n, sc.p, sc.vf, r0, st.acc);
  switch (qb.rows - r0) {
    case 3: PvRows<A, 3>(qb, n, sc.p, sc.vf, r0, st.acc); break;
    case 2: PvRows<A, 2>(qb, n, sc.p, sc.vf, r0, st.acc); break;
    case 1: PvRows<A, 1>(qb, n, sc.p, sc.vf, r0, st.acc); break;
    default: break;
  }
}

}  // namespace muninn::cpu::attn
