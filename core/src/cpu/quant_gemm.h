// Private to the CPU backend: register-blocked integer GEMM for batched MatMul (prefill) with
// q4_0 / q4_1 / q5_0 / q5_1 / q8_0 weights, on AVX-512 with VNNI (vpdpbusd).
//
// Both sides are unpacked once into a kernel-friendly layout, then a micro-kernel computes a
// tile of up to 4 weight rows x 4 activation rows per pass over K, so every loaded register is
// used 4 times (the dot-kernel path reloads and re-unpacks a weight block for every activation
// row):
//  - activations: each row quantized to q8_0 exactly as the dot path does (same int8 values,
//    same f16-rounded scale d_x), stored as K int8 plus, per pair of 32-blocks, the two scales
//    spread over 16 lanes, and s_x = d_x * sum(q_x) per block, rounded as the dot kernels have
//    it: for q4_1/q5_1 as q8_1 stores it (f16 of the unrounded d_x times sum(q_x), closer to
//    sum(x) than the rounded d_x times sum(q_x), whose error has one sign per block: on SmolLM2
//    the golden logit error was 2.5x larger with the latter); for q4_0/q5_0/q8_0 exactly the
//    rounded d_x times sum(q_x), which is what their fixed offsets multiply.
//  - weights, a tile of rows at a time (per thread, reused by every activation row): values as
//    unsigned bytes u (q4: the nibble, q5: the 5-bit value, q8_0: q + 128), the block scale
//    d_w spread like d_x, and an offset m_w such that w = d_w * u + m_w (q4_0: -8 d_w, q5_0:
//    -16 d_w, q8_0: -128 d_w, q4_1/q5_1: the stored minimum).
// Then sum_i w_i x_i = sum_blocks d_w d_x sum(u q_x) + m_w s_x. Results equal the dot path's up
// to float accumulation order (integer block sums are exact in both; q4_0/q5_0/q8_0 fold their
// fixed offset into m_w s_x where the dot path subtracts it from the integers).
#pragma once

#include <cstdint>
#include <memory>

#include "muninn/core/dtype.h"

namespace muninn::cpu {

// True when `weight` has a VNNI GEMM kernel (the CPU check is the caller's).
bool VnniGemmSupports(DType weight);

// Activations in the kernel's layout (see above). Rows are independent, so Pack may run on
// several threads for disjoint row ranges.
class VnniGemmActs {
 public:
  VnniGemmActs(int64_t m, int64_t k);  // k: a multiple of 32

  // Quantizes rows [begin, end) of x ([m, k] f32, rows `x_stride` bytes apart) for `weight`
  // (which decides how s_x is rounded, see above).
  void Pack(DType weight, const char* x, int64_t x_stride, int64_t begin, int64_t end);

  int64_t m() const { return m_; }
  int64_t k() const { return k_; }
  int64_t k_pad() const { return k_pad_; }    // K rounded up to 64 (a pair of blocks)
  int64_t n_pairs() const { return k_pad_ / 64; }
  int64_t n_blk16() const { return n_blk16_; }  // block count rounded up to 16
  const int8_t* q(int64_t row) const { return q_.get() + row * k_pad_; }
  const float* d16(int64_t row) const { return d16_.get() + row * n_pairs() * 16; }
  const float* s(int64_t row) const { return s_.get() + row * n_blk16_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  int64_t m_, k_, k_pad_, n_blk16_;
  std::unique_ptr<int8_t[], Free> q_;   // [m, k_pad]
  std::unique_ptr<float[], Free> d16_;  // [m, n_pairs, 16]
  std::unique_ptr<float[], Free> s_;    // [m, n_blk16]
};

// out[i, j] = sum_k x[i, k] w[j, k] for every activation row i < acts.m() and weight rows
// j in [n_begin, n_end). `w` points at row 0 of w ([N, K] of `weight`, rows `w_stride` bytes
// apart); out rows are `out_stride` bytes apart. Needs AVX-512 F/BW/VL/DQ + VNNI.
void VnniGemm(DType weight, const char* w, int64_t w_stride, int64_t n_begin, int64_t n_end,
              const VnniGemmActs& acts, char* out, int64_t out_stride);

// ---- decode: few activation rows, q4_0 / q4_1 weights ----
//
// A mat x vec cannot reuse unpacked weights, so here the activation is laid out to fit the
// weight's own encoding instead: per group of 4 blocks (192 bytes, cache-line aligned), the first 16 values
// of each block (64 bytes), then the last 16 of each (64 bytes), then [d_x, s_x] of each block as
// 8 f32 (32 bytes, then 32 bytes of padding).
// Four weight blocks' nibbles then load into one register (4 x 16 bytes), their low and high
// nibbles meet the two 64-byte halves with one vpdpbusd each, and the 4 blocks' (d, m) pairs are
// converted and scaled with one instruction each. A trailing partial group is zero-padded.

// Bytes of one packed activation row of K values (K a multiple of 32).
int64_t VnniQ4ActBytes(int64_t k);
// Quantizes one f32 row into the layout above for `weight` (q8_0 values as QuantizeRow makes
// them; s_x rounded as for the GEMM).
void VnniQ4PackAct(DType weight, const float* x, int64_t k, void* dst);
// sum_i w_i x_i for one q4_0 or q4_1 weight row and one packed activation row.
float VnniQ4Dot(DType weight, int64_t k, const void* w_row, const void* act);

// QuantizeRow for the activation formats q8_0 and q8_1 (`act`), vectorized; bit-identical to
// QuantizeRow (same amax, same reciprocal, std::roundf's rounding). K a multiple of 32.
void Avx512QuantizeQ8Row(DType act, const float* x, void* dst, int64_t k);

}  // namespace muninn::cpu
