// Attention over [memory ; local] keys with one joint softmax and grouped-query heads, computed
// flash-decoding style: a block of kWarps warps takes one (query row t, query head h, key range);
// each warp streams every kWarps-th key of the range, scoring it with a warp reduction and
// folding it into its own online-softmax state (running max m, sum l, unnormalised acc). The
// block merges its warps' states; with several key ranges a second kernel merges the ranges.
// No [T, S] scores exist anywhere. Masking and the memory block follow Backend::Attention and the
// CPU kernel: memory keys are visible to every query and scored with mem_q (plus the per-head
// memory logit bias when given); local key s is visible to query t iff !causal or s <= t + (S - T).
#include "cuda/attention_tile.cuh"
#include "cuda/block_decode.h"
#include "cuda/kernel_util.cuh"

namespace muninn::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kAttnMaxHeadDim / kWarp;  // head-dim elements per lane

__device__ __forceinline__ float LoadElem(const AttentionOperand& o, const char* row, int64_t i) {
  if (o.q8_0) {  // DequantizeRow's d · q of element i's block
    const uint8_t* b = reinterpret_cast<const uint8_t*>(row) + (i / 32) * 34;
    return MulRn(HalfBitsToFloat(LoadU16(b)),
                 static_cast<float>(static_cast<int8_t>(b[2 + i % 32])));
  }
  return o.f16 ? HalfBitsToFloat(reinterpret_cast<const uint16_t*>(row)[i])
               : reinterpret_cast<const float*>(row)[i];
}

__global__ void __launch_bounds__(kWarps * kWarp) AttentionKernel(const AttentionLaunch a) {
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][kAttnMaxHeadDim];
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int64_t t = blockIdx.x / a.n_head, h = blockIdx.x % a.n_head;
  const int64_t split = blockIdx.y;
  const int64_t g = h / (a.n_head / a.n_head_kv);

  // This query's (scaled) local and memory queries, kPerLane elements per lane.
  float q[kPerLane], mq[kPerLane], acc[kPerLane];
  const char* q_row = a.q.data + t * a.q.s0 + h * a.q.s1;
  const char* mq_row = a.mem_q.data + t * a.mem_q.s0 + h * a.mem_q.s1;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t e = lane + i * kWarp;
    q[i] = e < a.d ? reinterpret_cast<const float*>(q_row)[e] * a.scale : 0.0f;
    mq[i] = e < a.d ? reinterpret_cast<const float*>(mq_row)[e] * a.scale : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const float mem_bias = a.has_mem_bias ? a.mem_bias[h] : 0.0f;

  const int64_t visible_local = a.causal ? t + (a.S - a.T) + 1 : a.S;
  const int64_t end_all = a.M + (visible_local < a.S ? visible_local : a.S);
  const int64_t kb = split * a.split_keys;
  const int64_t ke = kb + a.split_keys < end_all ? kb + a.split_keys : end_all;
  for (int64_t j = kb + warp; j < ke; j += kWarps) {
    const bool mem = j < a.M;
    const AttentionOperand& ko = mem ? a.mem_k : a.k;
    const AttentionOperand& vo = mem ? a.mem_v : a.v;
    const int64_t row = mem ? j : j - a.M;
    const char* k_row = ko.data + row * ko.s0 + g * ko.s1;
    const char* v_row = vo.data + row * vo.s0 + g * vo.s1;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t e = lane + i * kWarp;
      if (e < a.d) dot += (mem ? mq[i] : q[i]) * LoadElem(ko, k_row, e);
    }
    const float s = WarpSum(dot) + (mem ? mem_bias : 0.0f);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 for the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t e = lane + i * kWarp;
      if (e < a.dv) acc[i] = acc[i] * corr + p * LoadElem(vo, v_row, e);
    }
    m = m_new;
  }

  // Merge the warps' states.
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t e = lane + i * kWarp;
    if (e < a.dv) s_acc[warp][e] = acc[i];
  }
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) {
    if (s_l[w] > 0.0f) m_all = fmaxf(m_all, s_m[w]);
  }
  float wgt[kWarps];
  float l_all = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wgt[w] = s_l[w] > 0.0f ? expf(s_m[w] - m_all) : 0.0f;
    l_all += wgt[w] * s_l[w];
  }
  if (a.n_split == 1) {
    float* o = reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1);
    const float inv = 1.0f / l_all;
    for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
      float v = 0.0f;
      for (int w = 0; w < kWarps; ++w) v += wgt[w] * s_acc[w][e];
      o[e] = v * inv;
    }
    return;
  }
  float* part = a.partial + ((t * a.n_head + h) * a.n_split + split) * (2 + a.dv);
  if (threadIdx.x == 0) {
    part[0] = m_all;
    part[1] = l_all;
  }
  for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += wgt[w] * s_acc[w][e];
    part[2 + e] = v;
  }
}

// One block per (t, h): combines the n_split range states into out.
__global__ void MergeKernel(const AttentionLaunch a) {
  const int64_t t = blockIdx.x / a.n_head, h = blockIdx.x % a.n_head;
  const int64_t stride = 2 + a.dv;
  const float* parts = a.partial + (t * a.n_head + h) * a.n_split * stride;
  float m_all = -INFINITY;
  for (int64_t s = 0; s < a.n_split; ++s) {
    if (parts[s * stride + 1] > 0.0f) m_all = fmaxf(m_all, parts[s * stride]);
  }
  float l_all = 0.0f;
  for (int64_t s = 0; s < a.n_split; ++s) {
    const float l = parts[s * stride + 1];
    if (l > 0.0f) l_all += expf(parts[s * stride] - m_all) * l;
  }
  const float inv = 1.0f / l_all;
  float* o = reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1);
  for (int64_t e = threadIdx.x; e < a.dv; e += blockDim.x) {
    float v = 0.0f;
    for (int64_t s = 0; s < a.n_split; ++s) {
      const float l = parts[s * stride + 1];
      if (l > 0.0f) v += expf(parts[s * stride] - m_all) * parts[s * stride + 2 + e];
    }
    o[e] = v * inv;
  }
}

// ---- prefill: query tiles ----------------------------------------------------------------------
// For T >= kTiledMinRows the decode kernel above would re-read every key once per query row. Here
// a block of 128 threads takes kBq = 32 query rows of one head and walks the keys in tiles of
// kBk = 32 staged (as f32) in shared memory, so each K/V element read from global memory serves
// 32 queries. Thread (r, c) = (tid / 4, tid % 4) scores keys c, c + 4, ... of a tile for query
// row r, keeps row r's online-softmax state (m, l) in step with the three other threads of its
// row (shuffles among 4 lanes), and owns output columns c, c + 4, ... of row r. Memory keys come
// first with the memory queries (mem_q) staged, then local keys with the local queries; one
// softmax spans both, as in the decode kernel. Rows of shared arrays are padded by one float so
// the 8 rows a warp touches fall in different banks. When the query tiles alone give the GPU too
// few blocks (T = 512 and 9 heads: 144), the keys are split into ranges (blockIdx.z) whose states
// MergeKernel combines, as in decode; a range holding no key a row can see leaves l = 0, which
// the merge skips.
constexpr int kTileThreads = 128;
constexpr int kBq = static_cast<int>(kTiledRows);
constexpr int kBk = static_cast<int>(kTiledKeys);

size_t TiledSharedBytes(int64_t d, int64_t dv) {
  return sizeof(float) *
         static_cast<size_t>(kBq * (d + 1) + kBk * (d + 1) + kBk * (dv + 1) + kBq * (kBk + 1));
}

template <int kCols>  // output columns per thread: dv <= 4 * kCols
__global__ void __launch_bounds__(kTileThreads) TiledAttentionKernel(const AttentionLaunch a) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(a.d), dv = static_cast<int>(a.dv);
  float* s_q = smem;                  // [kBq][d + 1]
  float* s_k = s_q + kBq * (d + 1);   // [kBk][d + 1]
  float* s_v = s_k + kBk * (d + 1);   // [kBk][dv + 1]
  float* s_p = s_v + kBk * (dv + 1);  // [kBq][kBk + 1]
  const int tid = static_cast<int>(threadIdx.x);
  const TileThread x = ThisTileThread(a, kBq);
  const int r = x.r, c = x.c;
  const int64_t t0 = x.t0, t = x.t, h = x.h, g = x.g;

  float acc[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) acc[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const int64_t local_end = TileLocalEnd(a, t0, kBq);
  for (int phase = 0; phase < 2; ++phase) {
    const TilePhase ph = PhaseKeys(a, phase, local_end);
    const bool mem = ph.mem;
    const int64_t k_begin = ph.begin, n_keys = ph.end;
    if (n_keys <= k_begin) continue;
    const AttentionOperand &qo = *ph.q, &ko = *ph.k, &vo = *ph.v;
    __syncthreads();  // the previous phase may still read s_q
    for (int i = tid; i < kBq * d; i += kTileThreads) {
      const int row = i / d, e = i % d;
      const int64_t tq = t0 + row;
      s_q[row * (d + 1) + e] =
          tq < a.T ? reinterpret_cast<const float*>(qo.data + tq * qo.s0 + h * qo.s1)[e] * a.scale
                   : 0.0f;
    }
    for (int64_t kb = k_begin; kb < n_keys; kb += kBk) {
      __syncthreads();  // s_k / s_v / s_q of the previous step are no longer read
      for (int i = tid; i < kBk * d; i += kTileThreads) {
        const int key = i / d, e = i % d;
        const int64_t j = kb + key;
        s_k[key * (d + 1) + e] =
            j < n_keys ? LoadElem(ko, ko.data + j * ko.s0 + g * ko.s1, e) : 0.0f;
      }
      for (int i = tid; i < kBk * dv; i += kTileThreads) {
        const int key = i / dv, e = i % dv;
        const int64_t j = kb + key;
        s_v[key * (dv + 1) + e] =
            j < n_keys ? LoadElem(vo, vo.data + j * vo.s0 + g * vo.s1, e) : 0.0f;
      }
      __syncthreads();

      float s[kBk / 4];
#pragma unroll
      for (int i = 0; i < kBk / 4; ++i) s[i] = 0.0f;
      const float* qr = s_q + r * (d + 1);
      for (int e = 0; e < d; ++e) {
        const float qv = qr[e];
#pragma unroll
        for (int i = 0; i < kBk / 4; ++i) s[i] += qv * s_k[(c + 4 * i) * (d + 1) + e];
      }
      const float corr = TileSoftmax(a, x, mem, kb, n_keys, s, &m, &l,
                                     [&](int i, float p) { s_p[r * (kBk + 1) + c + 4 * i] = p; });
      __syncwarp();  // row r's probabilities come from the four lanes of its quad
      const float* pr = s_p + r * (kBk + 1);
#pragma unroll
      for (int k = 0; k < kCols; ++k) acc[k] *= corr;
      for (int key = 0; key < kBk; ++key) {
        const float p = pr[key];
        const float* vr = s_v + key * (dv + 1);
#pragma unroll
        for (int k = 0; k < kCols; ++k) {
          const int col = c + 4 * k;
          if (col < dv) acc[k] += p * vr[col];
        }
      }
    }
  }
  if (x.row_ok) WriteTileRow<kCols>(a, t, h, c, m, l, acc);
}

template <int kCols>
cudaError_t LaunchTiled(const AttentionLaunch& a, cudaStream_t stream) {
  const size_t bytes = TiledSharedBytes(a.d, a.dv);
  if (bytes > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(TiledAttentionKernel<kCols>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>((a.T + kBq - 1) / kBq), static_cast<unsigned>(a.n_head),
                  static_cast<unsigned>(a.n_split));
  TiledAttentionKernel<kCols><<<grid, kTileThreads, bytes, stream>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || a.n_split == 1) return e;
  MergeKernel<<<static_cast<unsigned>(a.T * a.n_head), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

// ---- decode: one block per (KV head, key range), all its query heads at once --------------------
// For few query rows (T * group <= kGqaMaxQ) each block takes a KV head g and a range of keys and
// serves every query row of every query head of g's group, so a K/V row is read once for the group
// (3 query heads in SmolLM2) instead of once per head. Keys are walked in chunks of kGqaKeys: each
// thread scores one key against all the block's queries (staged in shared memory, read as
// broadcasts) with the key row loaded in 16-byte words; one warp per query row turns the chunk's
// scores into probabilities and updates that row's running max and sum; then threads own value
// columns (kGqaThreads / dv_pad threads per column, each over every parts-th key) and fold
// probabilities x V rows into their accumulators. Ranges merge with MergeKernel, as above.
constexpr int kGqaThreads = 128;
constexpr int kGqaKeys = kGqaThreads;

__device__ __forceinline__ void LoadRow8(const AttentionOperand& o, const char* row, int e0,
                                         float* v) {
  if (o.f16) {
    const uint4 u = *reinterpret_cast<const uint4*>(reinterpret_cast<const uint16_t*>(row) + e0);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = HalfBitsToFloat(static_cast<uint16_t>(w[i] & 0xFFFF));
      v[2 * i + 1] = HalfBitsToFloat(static_cast<uint16_t>(w[i] >> 16));
    }
  } else {
    const float4 a = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(row) + e0);
    const float4 b = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(row) + e0 + 4);
    v[0] = a.x;
    v[1] = a.y;
    v[2] = a.z;
    v[3] = a.w;
    v[4] = b.x;
    v[5] = b.y;
    v[6] = b.z;
    v[7] = b.w;
  }
}

size_t GqaSharedBytes(int64_t q_rows, int64_t d, int64_t dv) {
  const int64_t dv_pad = dv <= 32 ? 32 : dv <= 64 ? 64 : 128;
  const int64_t parts = kGqaThreads / dv_pad;
  return sizeof(float) * static_cast<size_t>(2 * q_rows * d + q_rows * kGqaKeys +
                                             parts * q_rows * dv_pad + 3 * q_rows);
}

template <int kMaxQ>
__global__ void __launch_bounds__(kGqaThreads) GqaDecodeKernel(const AttentionLaunch a) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(a.d), dv = static_cast<int>(a.dv);
  const int group = static_cast<int>(a.n_head / a.n_head_kv);
  const int Q = static_cast<int>(a.T) * group;  // query rows of this block: (t, head in group)
  const int dv_pad = dv <= 32 ? 32 : dv <= 64 ? 64 : 128;
  const int parts = kGqaThreads / dv_pad;
  float* s_q = smem;                      // [Q][d] local queries, scaled
  float* s_mq = s_q + Q * d;              // [Q][d] memory queries, scaled
  float* s_p = s_mq + Q * d;              // [Q][kGqaKeys] scores, then probabilities
  float* s_o = s_p + Q * kGqaKeys;        // [parts][Q][dv_pad] accumulators to combine
  float* s_m = s_o + parts * Q * dv_pad;  // [Q] running max
  float* s_l = s_m + Q;                   // [Q] running sum
  float* s_c = s_l + Q;                   // [Q] this chunk's rescale factor
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp, warp = tid / kWarp;
  const int64_t g = blockIdx.x;
  const int64_t split = blockIdx.y;

  for (int i = tid; i < Q * d; i += kGqaThreads) {
    const int qi = i / d, e = i % d;
    const int64_t t = qi / group, h = g * group + qi % group;
    s_q[i] = reinterpret_cast<const float*>(a.q.data + t * a.q.s0 + h * a.q.s1)[e] * a.scale;
    s_mq[i] =
        reinterpret_cast<const float*>(a.mem_q.data + t * a.mem_q.s0 + h * a.mem_q.s1)[e] * a.scale;
  }
  for (int qi = tid; qi < Q; qi += kGqaThreads) {
    s_m[qi] = -INFINITY;
    s_l[qi] = 0.0f;
  }
  const int e_col = tid % dv_pad, part = tid / dv_pad;
  float acc[kMaxQ];
#pragma unroll
  for (int qi = 0; qi < kMaxQ; ++qi) acc[qi] = 0.0f;

  const int64_t kb = split * a.split_keys;
  const int64_t ke = kb + a.split_keys < a.M + a.S ? kb + a.split_keys : a.M + a.S;
  for (int64_t c0 = kb; c0 < ke; c0 += kGqaKeys) {
    __syncthreads();  // queries staged / s_p of the previous chunk consumed
    // Scores: thread tid takes key c0 + tid.
    {
      const int64_t j = c0 + tid;
      float sc[kMaxQ];
#pragma unroll
      for (int qi = 0; qi < kMaxQ; ++qi) sc[qi] = 0.0f;
      const bool mem = j < a.M;
      if (j < ke) {
        const AttentionOperand& ko = mem ? a.mem_k : a.k;
        const char* k_row = ko.data + (mem ? j : j - a.M) * ko.s0 + g * ko.s1;
        const float* qs = mem ? s_mq : s_q;
        for (int e0 = 0; e0 < d; e0 += 8) {
          float kv[8];
          LoadRow8(ko, k_row, e0, kv);
#pragma unroll
          for (int qi = 0; qi < kMaxQ; ++qi) {
            if (qi < Q) {
              const float* qr = qs + qi * d + e0;
#pragma unroll
              for (int i = 0; i < 8; ++i) sc[qi] += qr[i] * kv[i];
            }
          }
        }
      }
#pragma unroll
      for (int qi = 0; qi < kMaxQ; ++qi) {
        if (qi < Q) {
          const int64_t t = qi / group, h = g * group + qi % group;
          bool visible = j < ke;
          if (visible && !mem && a.causal) visible = (j - a.M) <= t + (a.S - a.T);
          s_p[qi * kGqaKeys + tid] =
              visible ? sc[qi] + (mem && a.has_mem_bias ? a.mem_bias[h] : 0.0f) : -INFINITY;
        }
      }
    }
    __syncthreads();
    // Softmax bookkeeping: warp w takes query rows w, w + 4, ...
    for (int qi = warp; qi < Q; qi += kGqaThreads / kWarp) {
      float* pr = s_p + qi * kGqaKeys;
      float cmax = -INFINITY;
      for (int k = lane; k < kGqaKeys; k += kWarp) cmax = fmaxf(cmax, pr[k]);
      cmax = WarpMax(cmax);
      const float m_old = s_m[qi];
      const float m_new = fmaxf(m_old, cmax);
      float sum = 0.0f;
      for (int k = lane; k < kGqaKeys; k += kWarp) {
        const float p = pr[k] == -INFINITY ? 0.0f : expf(pr[k] - m_new);
        pr[k] = p;
        sum += p;
      }
      sum = WarpSum(sum);
      if (lane == 0) {
        const float corr = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
        s_c[qi] = corr;
        s_l[qi] = s_l[qi] * corr + sum;
        s_m[qi] = m_new;
      }
    }
    __syncthreads();
    // Values: column e_col of every part-th key of the chunk.
#pragma unroll
    for (int qi = 0; qi < kMaxQ; ++qi) {
      if (qi < Q) acc[qi] *= s_c[qi];
    }
    if (e_col < dv) {
      const int64_t n_chunk = ke - c0 < kGqaKeys ? ke - c0 : kGqaKeys;
#pragma unroll 4
      for (int k = part; k < n_chunk; k += parts) {
        const int64_t j = c0 + k;
        const bool mem = j < a.M;
        const AttentionOperand& vo = mem ? a.mem_v : a.v;
        const char* v_row = vo.data + (mem ? j : j - a.M) * vo.s0 + g * vo.s1;
        const float v = LoadElem(vo, v_row, e_col);
#pragma unroll
        for (int qi = 0; qi < kMaxQ; ++qi) {
          if (qi < Q) acc[qi] += s_p[qi * kGqaKeys + k] * v;
        }
      }
    }
  }
  // Combine the parts' accumulators and write this range's state (or the output).
#pragma unroll
  for (int qi = 0; qi < kMaxQ; ++qi) {
    if (qi < Q && e_col < dv) s_o[(part * Q + qi) * dv_pad + e_col] = acc[qi];
  }
  __syncthreads();
  for (int i = tid; i < Q * dv; i += kGqaThreads) {
    const int qi = i / dv, e = i % dv;
    float v = 0.0f;
    for (int pp = 0; pp < parts; ++pp) v += s_o[(pp * Q + qi) * dv_pad + e];
    const int64_t t = qi / group, h = g * group + qi % group;
    const float l = s_l[qi];
    if (a.n_split == 1) {
      reinterpret_cast<float*>(a.out + t * a.out_s0 + h * a.out_s1)[e] = l > 0.0f ? v / l : 0.0f;
    } else {
      float* part_out = a.partial + ((t * a.n_head + h) * a.n_split + split) * (2 + a.dv);
      if (e == 0) {
        part_out[0] = s_m[qi];
        part_out[1] = l;
      }
      part_out[2 + e] = v;
    }
  }
}

template <int kMaxQ>
cudaError_t LaunchGqa(const AttentionLaunch& a, cudaStream_t stream) {
  const size_t bytes = GqaSharedBytes(a.T * (a.n_head / a.n_head_kv), a.d, a.dv);
  if (bytes > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(GqaDecodeKernel<kMaxQ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(a.n_head_kv), static_cast<unsigned>(a.n_split));
  GqaDecodeKernel<kMaxQ><<<grid, kGqaThreads, bytes, stream>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || a.n_split == 1) return e;
  MergeKernel<<<static_cast<unsigned>(a.T * a.n_head), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

bool Aligned16(const AttentionOperand& o, bool defined) {
  return !defined ||
         (reinterpret_cast<uintptr_t>(o.data) % 16 == 0 && o.s0 % 16 == 0 && o.s1 % 16 == 0);
}

}  // namespace

int64_t AttentionPartialFloats(int64_t T, int64_t n_head, int64_t n_split, int64_t dv) {
  return n_split > 1 ? T * n_head * n_split * (2 + dv) : 0;
}

bool AttentionUsesTiles(int64_t T, int64_t d, int64_t dv) {
  return T >= kTiledMinRows && d <= kTiledMaxHeadDim && dv <= kTiledMaxHeadDim;
}

bool AttentionUsesGqaDecode(const AttentionLaunch& a) {
  return !AttentionUsesTiles(a.T, a.d, a.dv) && a.T * (a.n_head / a.n_head_kv) <= kGqaMaxQ &&
         a.d % 8 == 0 && a.d <= kTiledMaxHeadDim && a.dv <= kTiledMaxHeadDim &&
         Aligned16(a.k, a.S > 0) && Aligned16(a.mem_k, a.M > 0) && !a.k.q8_0 && !a.mem_k.q8_0;
}

cudaError_t LaunchAttentionMerge(const AttentionLaunch& a, cudaStream_t stream) {
  if (a.T * a.n_head > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  MergeKernel<<<static_cast<unsigned>(a.T * a.n_head), 128, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(const AttentionLaunch& args, cudaStream_t stream) {
  if (AttentionUsesTiles(args.T, args.d, args.dv)) {
    if (AttentionUsesMma(args)) return LaunchMmaAttention(args, stream);
    if (args.n_head > 65535 || args.n_split > 65535 || args.T * args.n_head > 0x7fffffffLL) {
      return cudaErrorInvalidConfiguration;
    }
    return args.dv <= 64 ? LaunchTiled<16>(args, stream) : LaunchTiled<32>(args, stream);
  }
  if (AttentionUsesGqaDecode(args)) {
    if (args.n_split > 65535 || args.n_head_kv > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    const int64_t q_rows = args.T * (args.n_head / args.n_head_kv);
    if (q_rows <= 4) return LaunchGqa<4>(args, stream);
    if (q_rows <= 8) return LaunchGqa<8>(args, stream);
    if (q_rows <= 16) return LaunchGqa<16>(args, stream);
    return LaunchGqa<32>(args, stream);
  }
  const int64_t rows = args.T * args.n_head;
  if (rows > 0x7fffffffLL || args.n_split > 65535 || args.d > kAttnMaxHeadDim ||
      args.dv > kAttnMaxHeadDim) {
    return cudaErrorInvalidConfiguration;
  }
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(args.n_split));
  AttentionKernel<<<grid, kWarps * kWarp, 0, stream>>>(args);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || args.n_split == 1) return e;
  MergeKernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace muninn::cuda
