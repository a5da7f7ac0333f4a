// One ExpertFFN tile through Eigen, the activations alone for ExpertFFNInt8, and TopKExperts' two
// projections with their biases and gatings. CMake compiles this file once per instruction set
// (baseline, AVX2+FMA, AVX-512), each time with BUCKETRT_TILE_FN, BUCKETRT_ACTIVATE_FN,
// BUCKETRT_TOPK_FIRST_FN and BUCKETRT_TOPK_SECOND_FN naming the entry points and Eigen renamed to
// a namespace of its own, so that the three copies of Eigen's templates cannot be merged by the
// linker (an AVX-512 instantiation must never serve a CPU without AVX-512).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>

#include "cpu/prefetch.h"
#endif

#define EIGEN_DONT_PARALLELIZE  // parallelism is ORT's: one tile per worker
#define EIGEN_NO_DEBUG
#define Eigen BUCKETRT_EIGEN_NS
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // erf

#include "cpu/eigen_exp.h"
#include "cpu/expert_ffn.h"
#include "cpu/expert_ffn_int8.h"
#include "cpu/top_k_experts.h"

namespace bucketrt::cpu {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// softplus as torch computes it (threshold 20: linear above).
template <class A>
auto Softplus(const A& a) {
  return (a > 20.0f).select(a, Exp(a).log1p());
}

// max(a, b) and min(a, b) as torch.relu/torch.clamp: a NaN in `a` stays NaN (Eigen's default
// PropagateFast returns either operand).
template <class A>
auto Max(const A& a, float b) {
  return a.binaryExpr(A::PlainObject::Constant(a.rows(), a.cols(), b),
                      Eigen::internal::scalar_max_op<float, float, Eigen::PropagateNaN>());
}
template <class A>
auto Min(const A& a, float b) {
  return a.binaryExpr(A::PlainObject::Constant(a.rows(), a.cols(), b),
                      Eigen::internal::scalar_min_op<float, float, Eigen::PropagateNaN>());
}

// Every function of spec::Activation has a case below: a function the spec adds without one is a
// compile error (-Werror=switch), and the count is checked too.
static_assert(spec::kNumActivations == 16, "catalogue.py's ACTIVATION_FUNCTIONS changed: give every function a case");
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
template <class A>
void Apply(Activation act, A a) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kSqrtHalf = 0.7071067811865476f;
  switch (act) {
    case Activation::kRelu: a = Max(a, 0.0f); break;
    case Activation::kGelu: a = 0.5f * a * (1.0f + (a * kSqrtHalf).erf()); break;
    case Activation::kGelu10: a = Min(Max(0.5f * a * (1.0f + (a * kSqrtHalf).erf()), -10.0f), 10.0f); break;
    case Activation::kGeluTanh: a = 0.5f * a * (1.0f + (kSqrt2OverPi * (a + 0.044715f * a * a * a)).tanh()); break;
    case Activation::kQuickGelu: a = a * Logistic(1.702f * a); break;
    case Activation::kSilu: a = a * Logistic(a); break;
    case Activation::kRelu2: a = Max(a, 0.0f).square(); break;
    case Activation::kRelu6: a = Min(Max(a, 0.0f), 6.0f); break;
    case Activation::kLeakyRelu: a = (a >= 0.0f).select(a, 0.01f * a); break;
    case Activation::kSigmoid: a = Logistic(a); break;
    case Activation::kTanh: a = a.tanh(); break;
    case Activation::kHardswish: a = a * Min(Max(a + 3.0f, 0.0f), 6.0f) / 6.0f; break;
    case Activation::kMish: a = a * Softplus(a).tanh(); break;
    case Activation::kLaplace: a = 0.5f * (1.0f + ((a - 0.707107f) / (0.282095f * 1.4142135623730951f)).erf()); break;
    case Activation::kSqrtSoftplus: a = Softplus(a).sqrt(); break;
    case Activation::kLinear: break;
  }
}
#pragma GCC diagnostic pop

}  // namespace

void BUCKETRT_TILE_FN(const float* hidden, int64_t dim, int64_t ff, const float* wi, const float* wo,
                      const int32_t* tokens, int64_t rows, int64_t f0, int64_t f1, Activation act, float* partial,
                      float* scratch) {
  using Stride = Eigen::OuterStride<>;
  const int64_t width = f1 - f0;
  Eigen::Map<RowMatrix> x(scratch, rows, dim);
  Eigen::Map<RowMatrix> h(scratch + rows * dim, rows, width);
  Eigen::Map<RowMatrix> y(partial, rows, dim);
  // nn.Linear layout [out, in]: this chunk's rows of wi, its columns of wo.
  Eigen::Map<const RowMatrix> w1(wi + f0 * dim, width, dim);
  Eigen::Map<const RowMatrix, 0, Stride> w2(wo + f0, dim, width, Stride(ff));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(scratch + r * dim, hidden + static_cast<int64_t>(tokens[r]) * dim, sizeof(float) * dim);
  }
  h.noalias() = x * w1.transpose();
  Apply(act, h.array());
  y.noalias() = h * w2.transpose();
}

// ExpertFFNInt8's activation: the same functions, on its dequantized first layer.
void BUCKETRT_ACTIVATE_FN(Activation act, float* data, int64_t rows, int64_t cols, int64_t stride) {
  Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> h(data, rows, cols, Eigen::OuterStride<>(stride));
  Apply(act, h.array());
}

// dst = x w^T, x [rows, k] and w [n, k] row-major (nn.Linear's layout). With AVX-512: one GEMV-like
// dot product per (row, weight row) for a few rows (a decoding step's experts: DotProduct, the
// weights streamed from memory once), and for more the panel GEMM (PanelProduct), which broadcasts
// each weight from where it lies against packed rows of x. Without AVX-512: Eigen's GEMM, or one
// GEMV per row for a few rows, where the GEMM's packing of w costs more than it saves (on an
// AVX2 CPU, 2 to 6 rows ran 1.2 to 2x faster as GEMVs).
//
// Why not Eigen's GEMM with AVX-512: its row-major product is computed as w x^T, so each task packs
// its weight slice first (transposed), a pass over weights that come from memory once per task;
// at 32 rows per expert (a prefill of 128 tokens, 8 experts top-2) that pass took as long as the
// GEMM's kernel (perf: gemm_pack_lhs and ptranspose 28% of the samples, gebp 30%). The panel GEMM
// packs x instead (a few hundred rows, from the cache) and reads each weight once per depth chunk.
namespace {
constexpr int64_t kGemvRows = 6;

#if defined(__AVX512F__)
constexpr int kDotRowBlock = 6;     // x rows per block: 6 x 4 accumulators, 4 weight rows and one x
constexpr int kDotWeightBlock = 4;  // row in registers (29 of 32)

// How far ahead of the weights it reads DotProduct's first row block asks for them, into L2.
// A decoding step's dot products wait on memory, and the hardware's prefetchers fall behind: a
// block of 4 weight rows reads 4 streams a row apart, and at D = 1024 a row is a 4 KiB page, at
// whose end a stream prefetcher stops. (Zen 4, 2 threads, decoding steps of the Mixtral-like model
// interleaved in one process: at batch 1, medians of 18.2-19.7 ms to 16.2 at 64 KiB ahead, 16.5 at
// 32 KiB, 16.9 at 128 KiB; at batch 4, 41.1 to 35.7 ms; GPT-OSS at batch 1, 20.2 to 17.1. One
// weight row at a time, a single stream, did as well as this without a prefetch, worse with one.)
constexpr uintptr_t kDotPrefetchBytes = 64 * 1024;

// c[r * ldc + n] = sum_k x[r * ldx + k] w[n * ldw + k] for r < RB, n < NB: sixteen lanes of partial
// sums per (r, n) over k (one fused multiply-add per 16 k, in order), then their sum. The order
// depends on k_len alone: not on which rows or weight rows share a block. With `prefetch`, each
// weight line read is asked for again kDotPrefetchBytes on (past the weights: the next task's rows,
// most often).
template <int RB, int NB>
void DotBlock(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k_len, float* c, int64_t ldc,
              bool prefetch) {
  __m512 acc[RB][NB];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_setzero_ps();
  }
  auto step = [&](int64_t k, __mmask16 mask) {
    __m512 wv[NB];
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) wv[n] = _mm512_maskz_loadu_ps(mask, w + n * ldw + k);
    if (prefetch) {
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) PrefetchAhead(w + n * ldw + k, kDotPrefetchBytes);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * ldx + k);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_fmadd_ps(xv, wv[n], acc[r][n]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= k_len; k += 16) step(k, static_cast<__mmask16>(0xffff));
  if (k < k_len) step(k, static_cast<__mmask16>((1u << (k_len - k)) - 1));
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) c[r * ldc + n] = _mm512_reduce_add_ps(acc[r][n]);
  }
}

using DotBlockFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, bool);
template <int RB, int... NB>
constexpr std::array<DotBlockFn, sizeof...(NB)> DotRow(std::integer_sequence<int, NB...>) {
  return {DotBlock<RB, NB + 1>...};
}
template <int... RB>
constexpr std::array<std::array<DotBlockFn, kDotWeightBlock>, sizeof...(RB)> DotTable(
    std::integer_sequence<int, RB...>) {
  return {DotRow<RB + 1>(std::make_integer_sequence<int, kDotWeightBlock>())...};
}
constexpr auto kDotBlocks = DotTable(std::make_integer_sequence<int, kDotRowBlock>());

// c [rows, n_len] (row stride ldc) = x [rows, k_len] w^T, w [n_len, k_len]: per block of 4 weight
// rows (read from memory by the first block of rows, which prefetches, from the cache by the
// others), every block of 6 rows of x.
void DotProduct(const float* x, int64_t rows, int64_t ldx, const float* w, int64_t n_len, int64_t ldw,
                int64_t k_len, float* c, int64_t ldc) {
  for (int64_t n0 = 0; n0 < n_len; n0 += kDotWeightBlock) {
    const int64_t nb = std::min<int64_t>(kDotWeightBlock, n_len - n0);
    for (int64_t r0 = 0; r0 < rows; r0 += kDotRowBlock) {
      const int64_t rb = std::min<int64_t>(kDotRowBlock, rows - r0);
      kDotBlocks[static_cast<size_t>(rb - 1)][static_cast<size_t>(nb - 1)](x + r0 * ldx, ldx, w + n0 * ldw, ldw, k_len,
                                                                            c + r0 * ldc + n0, ldc, r0 == 0);
    }
  }
}

// The panel GEMM. x's rows are packed per depth chunk of kPanelDepth, transposed, in panels of
// kPanelRows rows (a multiple of 16 for the last, zeros past the last row): panel[k][j] =
// x[r0 + j][k0 + k]. Its kernel holds a tile of MR weight rows x one panel in NB x MR registers of
// sixteen rows each and, per k, broadcasts each weight row's k-th value (read where it lies: the
// first panel brings the MR x kPanelDepth weights into L1, the other panels find them there)
// against the panel's k-th row. (A software prefetch of the next tile's weights measured no
// better: the hardware's prefetchers keep up.) The tile's sums live in `ct`
// [n_len, rows16] (the product transposed) between depth chunks, and are written to c once at
// the end. Each element is one fused multiply-add per k, in order from k = 0: the order depends on
// k_len alone, not on the rows, the tiles or the chunks, so the result does not depend on the
// thread count.
//
// Why 6 weight rows by 4 panel vectors, not 14 by 2 (28 accumulators) as before: a tile reads its
// MR weight rows side by side, ldw apart, and where ldw is a multiple of 1024 floats (4 KiB: a
// hidden size of 1024, 2048, 4096 in the first projection) every row's current cache line falls in
// the same set of L1, which holds 8 lines (Zen 4; Intel's since Sandy Bridge hold 8 or 12). 14 rows
// evicted each other at every k: one thread ran the Mixtral-like first projection at 37 GMAC/s
// against the second's (ldw 2816) 49; with 6 or 7 rows both ran at 46 to 50 (Zen 4). 6 by 4 keeps
// every accumulator in a register (7 by 4 spilled one).
constexpr int kPanelWeightRows = 6;  // MR: 24 accumulators, four panel vectors, a broadcast (29 of 32)
constexpr int kPanelVectors = 4;     // NB: sixteen rows each
constexpr int64_t kPanelRows = 16 * kPanelVectors;

template <int MR, int NB>
void PanelTile(const float* w, int64_t ldw, const float* panel, int64_t k_len, float* ct, int64_t ldct, bool first) {
  __m512 acc[MR][NB];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(ct + i * ldct + j * 16);
  }
  for (int64_t k = 0; k < k_len; ++k) {
    __m512 xv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) xv[j] = _mm512_loadu_ps(panel + k * NB * 16 + j * 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 wv = _mm512_set1_ps(w[i * ldw + k]);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(ct + i * ldct + j * 16, acc[i][j]);
  }
}

using PanelTileFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool);
template <int MR, int... NB>
constexpr std::array<PanelTileFn, sizeof...(NB)> PanelRow(std::integer_sequence<int, NB...>) {
  return {PanelTile<MR, NB + 1>...};
}
template <int... MR>
constexpr std::array<std::array<PanelTileFn, kPanelVectors>, sizeof...(MR)> PanelTable(std::integer_sequence<int, MR...>) {
  return {PanelRow<MR + 1>(std::make_integer_sequence<int, kPanelVectors>())...};
}
constexpr auto kPanelTiles = PanelTable(std::make_integer_sequence<int, kPanelWeightRows>());

// One product of the panel GEMM: w [n_len, k_len] (row stride ldw) into ct [n_len, rows16].
struct PanelTarget {
  const float* w;
  int64_t n_len, ldw;
  float* c;  // [rows, n_len], row stride ldc
  int64_t ldc;
};

// c = x w^T for each target (one or two: a gate and an up projection share x's packing), x [rows,
// k_len] (row stride ldx); rows <= kExpertRowBlock, every n_len <= the task's slice. scratch:
// PanelScratchFloats(the widest n_len) floats.
void PanelProducts(const float* x, int64_t rows, int64_t ldx, int64_t k_len, const PanelTarget* targets, int count,
                   float* scratch) {
  const int64_t rows16 = (rows + 15) / 16 * 16;
  float* packed = scratch;  // one depth chunk: rows16 x kPanelDepth
  // Element offsets of sixteen rows of x (the caller's strides fit int32: a task's rows are at most
  // kExpertRowBlock of an input's row length).
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i row_offsets = _mm512_mullo_epi32(_mm512_set1_epi32(static_cast<int32_t>(ldx)), lanes);
  float* ct[2] = {scratch + kExpertRowBlock * kPanelDepth, nullptr};
  if (count > 1) ct[1] = ct[0] + targets[0].n_len * rows16;
  for (int64_t k0 = 0; k0 < k_len; k0 += kPanelDepth) {
    const int64_t depth = std::min<int64_t>(kPanelDepth, k_len - k0);
    // Sixteen rows' k-th values per gather (zeros past the last row).
    for (int64_t r0 = 0; r0 < rows16; r0 += kPanelRows) {
      const int64_t width = std::min<int64_t>(kPanelRows, rows16 - r0);
      float* panel = packed + r0 * depth;
      for (int64_t h = 0; h < width; h += 16) {
        const int64_t live = std::clamp<int64_t>(rows - (r0 + h), 0, 16);
        const __mmask16 mask = static_cast<__mmask16>((1u << live) - 1);
        const float* src = x + (r0 + h) * ldx + k0;
        for (int64_t k = 0; k < depth; ++k) {
          _mm512_storeu_ps(panel + k * width + h,
                           _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, row_offsets, src + k, 4));
        }
      }
    }
    for (int t = 0; t < count; ++t) {
      const PanelTarget& target = targets[t];
      for (int64_t n0 = 0; n0 < target.n_len; n0 += kPanelWeightRows) {
        const int64_t mr = std::min<int64_t>(kPanelWeightRows, target.n_len - n0);
        const float* w = target.w + n0 * target.ldw + k0;
        for (int64_t r0 = 0; r0 < rows16; r0 += kPanelRows) {
          const int64_t nb = std::min<int64_t>(kPanelRows, rows16 - r0) / 16;
          kPanelTiles[static_cast<size_t>(mr - 1)][static_cast<size_t>(nb - 1)](
              w, target.ldw, packed + r0 * depth, depth, ct[t] + n0 * rows16 + r0, rows16, k0 == 0);
        }
      }
    }
  }
  // c = ct^T, sixteen columns of a row per gather.
  const __m512i ct_offsets = _mm512_mullo_epi32(_mm512_set1_epi32(static_cast<int32_t>(rows16)), lanes);
  for (int t = 0; t < count; ++t) {
    const PanelTarget& target = targets[t];
    for (int64_t r = 0; r < rows; ++r) {
      float* c = target.c + r * target.ldc;
      for (int64_t n = 0; n < target.n_len; n += 16) {
        const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, target.n_len - n)) - 1);
        _mm512_mask_storeu_ps(c + n, mask,
                              _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, ct_offsets, ct[t] + n * rows16 + r, 4));
      }
    }
  }
}
#endif

// dst = x w^T, and dst2 = x w2^T where dst2 is given (a gate and an up projection of the same rows).
template <class Dst, class X, class W>
void Products(Dst& dst, const X& x, const W& w, float* panel_scratch, Dst* dst2 = nullptr, const W* w2 = nullptr) {
#if defined(__AVX512F__)
  if (x.rows() >= kPanelFromRows) {
    const PanelTarget targets[2] = {{w.data(), w.rows(), w.outerStride(), dst.data(), dst.outerStride()},
                                    {dst2 ? w2->data() : nullptr, dst2 ? w2->rows() : 0, dst2 ? w2->outerStride() : 0,
                                     dst2 ? dst2->data() : nullptr, dst2 ? dst2->outerStride() : 0}};
    PanelProducts(x.data(), x.rows(), x.outerStride(), x.cols(), targets, dst2 ? 2 : 1, panel_scratch);
    return;
  }
  DotProduct(x.data(), x.rows(), x.outerStride(), w.data(), w.rows(), w.outerStride(), x.cols(), dst.data(),
             dst.outerStride());
  if (dst2) {
    DotProduct(x.data(), x.rows(), x.outerStride(), w2->data(), w2->rows(), w2->outerStride(), x.cols(), dst2->data(),
               dst2->outerStride());
  }
#else
  (void)panel_scratch;
  auto one = [&](Dst& d, const W& m) {
    if (x.rows() <= kGemvRows) {
      for (Eigen::Index r = 0; r < x.rows(); ++r) d.row(r).noalias() = x.row(r) * m.transpose();
    } else {
      d.noalias() = x * m.transpose();
    }
  };
  one(dst, w);
  if (dst2) one(*dst2, *w2);
#endif
}
}  // namespace

// TopKExperts' first projection on one slice of F: gate (and up) rows, biases, the gating.
static_assert(spec::kNumGatings == 5, "catalogue.py's EXPERT_GATINGS changed: give every gating a case");
void BUCKETRT_TOPK_FIRST_FN(const float* x, int64_t rows, int64_t dim, const float* w_gate, const float* b_gate,
                            const float* w_up, const float* b_up, int64_t width, Activation act, Gating gating,
                            float limit, float* a, int64_t lda, float* scratch, float* panel) {
  using Stride = Eigen::OuterStride<>;
  using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;
  Eigen::Map<const RowMatrix> xm(x, rows, dim);
  Eigen::Map<RowMatrix, 0, Stride> g(a, rows, width, Stride(lda));
  // nn.Linear layout [out, in]: h = x w^T + b, the product rounded, then the bias added (torch's
  // matmul and add).
  const Eigen::Map<const RowMatrix> wg(w_gate, width, dim);
  if (gating == Gating::kNone) {
    Products(g, xm, wg, panel);
    g.rowwise() += Eigen::Map<const RowVector>(b_gate, width);
    Apply(act, g.array());
    return;
  }
  Eigen::Map<RowMatrix, 0, Stride> u(scratch, rows, width, Stride(width));
  const Eigen::Map<const RowMatrix> wu(w_up, width, dim);
  Products(g, xm, wg, panel, &u, &wu);
  g.rowwise() += Eigen::Map<const RowVector>(b_gate, width);
  u.rowwise() += Eigen::Map<const RowVector>(b_up, width);
  // torch.clamp(up, -L, L): max, then min, a NaN staying NaN.
  auto clamped = [&] { return Min(Max(u.array(), -limit), limit); };
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
  switch (gating) {
    case Gating::kNone: break;
    case Gating::kGlu:  // act(gate) * up
      Apply(act, g.array());
      g.array() *= u.array();
      break;
    case Gating::kGluClamped:  // act(min(gate, L)) * clamp(up, -L, L)
      g.array() = Min(g.array(), limit);
      Apply(act, g.array());
      g.array() *= clamped();
      break;
    case Gating::kGluClampedAfter:  // min(act(gate), L) * clamp(up, -L, L)
      Apply(act, g.array());
      g.array() = Min(g.array(), limit);
      g.array() *= clamped();
      break;
    case Gating::kGluClampedOffset:  // act(min(gate, L)) * (clamp(up, -L, L) + 1)
      g.array() = Min(g.array(), limit);
      Apply(act, g.array());
      g.array() *= clamped() + 1.0f;
      break;
  }
#pragma GCC diagnostic pop
}

// TopKExperts' second projection on one slice of D, with its bias.
void BUCKETRT_TOPK_SECOND_FN(const float* a, int64_t rows, int64_t ff, int64_t lda, const float* w, const float* b,
                             int64_t width, float* y, int64_t ldy, float* panel) {
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<RowMatrix, 0, Stride> ym(y, rows, width, Stride(ldy));
  const Eigen::Map<const RowMatrix> wm(w, width, ff);
  Products(ym, Eigen::Map<const RowMatrix, 0, Stride>(a, rows, ff, Stride(lda)), wm, panel);
  ym.rowwise() += Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(b, width);
}

}  // namespace bucketrt::cpu
