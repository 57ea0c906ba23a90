// Private to the CUDA backend: the kernel launchers, one family per .cu file.
//
// Launchers take device pointers that the backend has validated (dtypes, shapes, alignment,
// aliasing: see cuda_backend.cc), enqueue work on `stream` and return the launch error
// (cudaGetLastError), never aborting. They do not synchronise. Pointers are bytes (`char*`) with
// byte strides, as Tensor reports them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "muninn/core/dtype.h"

namespace muninn::cuda {

// The rows of a tensor whose innermost dimension is packed: every dim but the last, flattened
// row-major; dims[k] / strides[k] (bytes) for the outer dims k < n_outer (at most 3).
struct RowLayout {
  int n_outer = 0;
  int64_t dims[3] = {1, 1, 1};
  int64_t strides[3] = {0, 0, 0};
};

enum class UnaryKind : uint8_t { kSilu, kGeluErf, kGeluTanh, kScale };
enum class BinaryKind : uint8_t { kAdd, kMul, kSwiGlu };

// eltwise.cu. y[r, i] = f(x[r, i]) (s: the Scale factor); rows x cols elements.
cudaError_t LaunchUnary(UnaryKind kind, const char* x, const RowLayout& lx, char* y,
                        const RowLayout& ly, int64_t rows, int64_t cols, float s,
                        cudaStream_t stream);
// y = a (op) b; b is one row broadcast over a's rows when b_broadcast.
cudaError_t LaunchBinary(BinaryKind kind, const char* a, const RowLayout& la, const char* b,
                         const RowLayout& lb, bool b_broadcast, char* y, const RowLayout& ly,
                         int64_t rows, int64_t cols, cudaStream_t stream);

// norm.cu. One block per row; w / bias may be null (= 1 / 0).
cudaError_t LaunchRmsNorm(const char* x, const RowLayout& lx, const float* w, float eps, char* y,
                          const RowLayout& ly, int64_t rows, int64_t cols, cudaStream_t stream);
cudaError_t LaunchLayerNorm(const char* x, const RowLayout& lx, const float* w, const float* bias,
                            float eps, char* y, const RowLayout& ly, int64_t rows, int64_t cols,
                            cudaStream_t stream);
// softmax.cu. y = softmax(x * scale) per row; an all -inf row gives zeros (as the CPU).
cudaError_t LaunchSoftmax(const char* x, const RowLayout& lx, float scale, char* y,
                          const RowLayout& ly, int64_t rows, int64_t cols, cudaStream_t stream);

// rope.cu. x, y: [T, n_head, head_dim] f32 with byte strides; positions: [T] i32 (device).
inline constexpr int kMaxRopePairs = 128;  // n_rot <= 256
struct RopeLaunch {
  const char* x = nullptr;
  int64_t x_s0 = 0, x_s1 = 0;
  char* y = nullptr;
  int64_t y_s0 = 0, y_s1 = 0;
  const char* positions = nullptr;
  int64_t pos_stride = 0;
  int64_t n_tokens = 0, n_head = 0, head_dim = 0, n_rot = 0;
  bool interleaved = false;
  double pos_scale = 1.0;
  float mscale = 1.0f;
  bool negate_positions = false;  // rotate by -position (RoPE's backward: the inverse rotation)
  double inv_freq[kMaxRopePairs] = {};  // radians per position, pair i < n_rot / 2
};
cudaError_t LaunchRope(const RopeLaunch& args, cudaStream_t stream);
// Backend::RopeAndStoreKv in one launch: `rope` rotates q in place (its x = y, n_head the query
// heads); k [T, n_kv, head_dim] is rotated in place with the same plan and also stored, converted,
// into kc; v is converted into vc. The caches are f16 (cache_f16) or f32 with packed heads.
struct RopeStoreLaunch {
  RopeLaunch rope;
  char* k = nullptr;
  int64_t k_s0 = 0, k_s1 = 0, n_kv = 0;
  const char* v = nullptr;
  int64_t v_s0 = 0, v_s1 = 0;
  char* kc = nullptr;
  int64_t kc_s0 = 0, kc_s1 = 0;
  char* vc = nullptr;
  int64_t vc_s0 = 0, vc_s1 = 0;
  bool cache_f16 = true;
};
cudaError_t LaunchRopeStore(const RopeStoreLaunch& args, cudaStream_t stream);

// get_rows.cu. Sets *bad (device int, zeroed by the caller) to 1 if any id is outside [0, V).
cudaError_t LaunchCheckIds(const char* ids, int64_t id_stride, bool ids_i64, int64_t n_ids,
                           int64_t n_rows, int* bad, cudaStream_t stream);
// out[t, :] (f32, packed rows of D) = decoded table[ids[t], :]; ids already checked.
cudaError_t LaunchGetRows(DType table_dtype, const char* table, int64_t table_row_stride,
                          const char* ids, int64_t id_stride, bool ids_i64, int64_t n_ids,
                          int64_t D, char* out, int64_t out_row_stride, cudaStream_t stream);

// copy.cu. dst rows = src rows converted; src any decodable dtype (block_decode.h), dst f32 / f16
// / bf16; cols elements per row.
cudaError_t LaunchConvert(DType src_dtype, const char* src, const RowLayout& ls, DType dst_dtype,
                          char* dst, const RowLayout& ld, int64_t rows, int64_t cols,
                          cudaStream_t stream);
// f32 rows -> q8_0 rows (cols a multiple of 32), bit for bit as QuantizeRow.
cudaError_t LaunchQuantizeQ8_0(const char* src, const RowLayout& ls, char* dst, const RowLayout& ld,
                               int64_t rows, int64_t cols, cudaStream_t stream);
// Same-dtype copy of rows of row_bytes bytes (any dtype; rows packed).
cudaError_t LaunchCopyBytes(const char* src, const RowLayout& ls, char* dst, const RowLayout& ld,
                            int64_t rows, int64_t row_bytes, cudaStream_t stream);

// matvec.cu. out[m, n] = sum_k x[m, k] * w[n, k] for small M (decode), computed on the weight's
// blocks as stored with f32 activations. x, out: f32 rows; w rows w_row_stride bytes apart.
inline constexpr int64_t kMatVecMaxRows = 8;
// What a mat×vec launch fuses around the product (Backend's fused decode ops): how each activation
// row is formed from the operands, and whether the product is added to the output.
enum class MatVecFuse : int {
  kNone,       // out = x · wᵀ
  kAdd,        // out += x · wᵀ
  kRmsNorm,    // out = (x / sqrt(mean(x²) + eps) * norm_w) · wᵀ, per activation row
  kSwiGluAdd,  // out += (silu(x) * x2) · wᵀ
};
struct MatVecInput {
  MatVecFuse fuse = MatVecFuse::kNone;
  const char* x2 = nullptr;       // kSwiGluAdd: the "up" rows, x's row stride and alignment
  const float* norm_w = nullptr;  // kRmsNorm: [K], or null for a weight of ones
  float eps = 0.0f;               // kRmsNorm
  // q4_0/q4_1/q8_0 with aligned rows: eight lanes share a block (the coalesced kernel) rather than
  // each lane taking whole blocks (the earlier kernel, kept for A/B measurements of unfused
  // launches; fused ones always take the coalesced kernel).
  bool coalesced = true;
};
cudaError_t LaunchMatVec(DType w_dtype, const char* w, int64_t w_row_stride, const char* x,
                         int64_t x_row_stride, int64_t M, int64_t N, int64_t K, char* out,
                         int64_t out_row_stride, cudaStream_t stream, const MatVecInput& in = {});
// Several weights of one dtype that share x (Backend::MatMulShared: Q/K/V, gate/up) in one
// launch: segment s is w[s] [first[s + 1] - first[s], K] with its own output, and the launch's
// rows [first[s], first[s + 1]) are its rows. Passed to the kernels by value.
inline constexpr int kMatVecMaxSegments = 4;
struct MatVecSegments {
  int count = 0;
  const char* w[kMatVecMaxSegments] = {};
  int64_t w_row_stride[kMatVecMaxSegments] = {};
  char* out[kMatVecMaxSegments] = {};
  int64_t out_row_stride[kMatVecMaxSegments] = {};
  int64_t first[kMatVecMaxSegments + 1] = {};  // first[0] = 0, first[count] = all rows
};
cudaError_t LaunchMatVecSegments(DType w_dtype, const MatVecSegments& segs, const char* x,
                                 int64_t x_row_stride, int64_t M, int64_t K, cudaStream_t stream,
                                 const MatVecInput& in = {});
// Dequantizes w [N, K] into a packed f16 (or bf16 when to_bf16) matrix dst [N, K].
cudaError_t LaunchDecodeToHalf(DType dtype, const char* src, int64_t src_row_stride, int64_t N,
                               int64_t K, bool to_bf16, void* dst, cudaStream_t stream);

// attention.cu. Flash-decoding style: one block per (query row, query head, key split); each
// split keeps an online-softmax state, merged by a second kernel when n_split > 1.
inline constexpr int kAttnMaxHeadDim = 256;
// Query heads a per-head memory logit bias (AttentionParams::mem_bias) may cover: the biases
// travel in the kernel argument, so their count is bounded.
inline constexpr int kAttnMaxBiasHeads = 256;
struct AttentionOperand {
  const char* data = nullptr;
  int64_t s0 = 0, s1 = 0;  // bytes per row, per head
  bool f16 = false;        // else f32 (or q8_0)
  bool q8_0 = false;       // q8_0 blocks (a quantized KV cache): rows of head_dim / 32 blocks
};
struct AttentionLaunch {
  AttentionOperand q, mem_q, k, v, mem_k, mem_v;  // mem_q == q when no separate memory queries
  char* out = nullptr;
  int64_t out_s0 = 0, out_s1 = 0;
  int64_t T = 0, S = 0, M = 0, n_head = 0, n_head_kv = 0, d = 0, dv = 0;
  float scale = 1.0f;
  bool causal = true;
  int64_t n_split = 1;     // key ranges per (row, head)
  int64_t split_keys = 0;  // keys per range (of the M + S concatenated keys)
  float* partial = nullptr;  // [T, n_head, n_split, 2 + dv] when n_split > 1
  bool has_mem_bias = false;  // add mem_bias[h] to every memory key's score of query head h
  float mem_bias[kAttnMaxBiasHeads] = {};
  bool tensor_cores = false;  // prefill may use the tensor-core kernel (AttentionUsesMma)
};
// Prefill (T >= kTiledMinRows query rows, head dims <= kTiledMaxHeadDim) runs a query-tiled kernel
// that stages K/V in shared memory; both kernels split the keys into ranges when the query
// blocks alone would leave the GPU idle, and then need `partial`.
inline constexpr int64_t kTiledMinRows = 16;
inline constexpr int64_t kTiledRows = 32;  // query rows per block of the tiled kernel
inline constexpr int64_t kTiledKeys = 32;  // keys per staged tile (key ranges are multiples)
inline constexpr int64_t kTiledMaxHeadDim = 128;
bool AttentionUsesTiles(int64_t T, int64_t d, int64_t dv);
// Decode with few query rows per KV head (T * n_head / n_head_kv <= kGqaMaxQ), head dims <= 128
// and 16-byte-aligned K rows runs one block per (KV head, key range); its ranges are a multiple of
// kGqaChunk keys. `a` needs its operands, shapes and M set.
inline constexpr int64_t kGqaMaxQ = 32;
inline constexpr int64_t kGqaChunk = 128;
bool AttentionUsesGqaDecode(const AttentionLaunch& a);
// Floats of scratch `partial` needs for a launch with these sizes.
int64_t AttentionPartialFloats(int64_t T, int64_t n_head, int64_t n_split, int64_t dv);
cudaError_t LaunchAttention(const AttentionLaunch& args, cudaStream_t stream);
// The query-tiled prefill on tensor cores (attention_mma.cu): with a.tensor_cores, f16 K/V (and
// memory K/V), f32 queries and head dims that are multiples of 16 (up to kTiledMaxHeadDim).
// LaunchAttention picks it for such launches.
bool AttentionUsesMma(const AttentionLaunch& a);
cudaError_t LaunchMmaAttention(const AttentionLaunch& a, cudaStream_t stream);
// Combines the key ranges' partial states (a.n_split > 1) into a.out.
cudaError_t LaunchAttentionMerge(const AttentionLaunch& a, cudaStream_t stream);

}  // namespace muninn::cuda
