// MaskedAttention's tile (cpu/masked_attention.h): the logits of one head's block of queries against
// its span of keys, each row's softmax, the weighted values. CMake compiles this file once per
// instruction set (baseline, AVX2+FMA, AVX-512), each time with BUCKETRT_ATTENTION_TILE_FN naming the
// entry point and Eigen renamed to the expert tiles' namespace of that set (expert_ffn_tile.cc says
// why).
#include <algorithm>
#include <cmath>

#define EIGEN_DONT_PARALLELIZE  // parallelism is ORT's: one tile per worker
#define EIGEN_NO_DEBUG
#define Eigen BUCKETRT_EIGEN_NS
#include <Eigen/Core>

#include "cpu/eigen_exp.h"
#include "cpu/masked_attention.h"

namespace bucketrt::cpu {

void BUCKETRT_ATTENTION_TILE_FN(const float* q, int64_t rows, int64_t dim, const float* k, int64_t width,
                                const float* v, int64_t value_dim, float scale, float sink, const int32_t* lo,
                                const int32_t* hi, const uint8_t* dense, const int32_t* mask, int64_t mask_stride,
                                bool values_finite, float* out, int64_t ldo, float* scores) {
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
  Eigen::Map<RowMatrix> p(scores, rows, width);
  Eigen::Map<RowMatrix, 0, Stride> o(out, rows, value_dim, Stride(ldo));
  if (width > 0) p.noalias() = Eigen::Map<const RowMatrix>(q, rows, dim) * Eigen::Map<const RowMatrix>(k, width, dim).transpose();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = scores + r * width;
    const int64_t a = std::max<int64_t>(lo[r], 0), b = std::min<int64_t>(hi[r], width);
    if (b <= a) {  // no key: weight 0 everywhere, and 0 out
      std::fill(row, row + width, 0.0f);
      continue;
    }
    std::fill(row, row + a, 0.0f);
    std::fill(row + b, row + width, 0.0f);
    Eigen::Map<Array> seg(row + a, b - a);
    seg *= scale;  // the product rounded, then scaled: the reference's (q . k) * scale
    const int32_t* m = mask + r * mask_stride;
    float top = sink;
    if (dense[r]) {
      top = std::max(top, seg.maxCoeff());
    } else {
      for (int64_t c = a; c < b; ++c) {
        if (m[c] != 0) top = std::max(top, row[c]);
      }
    }
    seg = Exp(seg - top);  // a weight that underflows is 0, on every instruction set (eigen_exp.h)
    if (!dense[r]) {
      for (int64_t c = a; c < b; ++c) {
        if (m[c] == 0) row[c] = 0.0f;  // selected, not multiplied: a masked key's NaN stays out
      }
    }
    const float denominator = seg.sum() + std::exp(sink - top);
    seg /= denominator;
  }
  if (values_finite) {
    if (width > 0) {
      o.noalias() = p * Eigen::Map<const RowMatrix>(v, width, value_dim);
    } else {
      o.setZero();
    }
    return;
  }
  // An Inf or NaN among the values: a key of weight exactly 0 must add nothing (0 * Inf would be NaN),
  // so each row adds its keys one by one; a NaN weight (a NaN logit) still adds.
  for (int64_t r = 0; r < rows; ++r) {
    float* y = out + r * ldo;
    std::fill(y, y + value_dim, 0.0f);
    const float* row = scores + r * width;
    for (int64_t c = 0; c < width; ++c) {
      if (row[c] == 0.0f) continue;
      const float w = row[c];
      const float* x = v + c * value_dim;
      for (int64_t j = 0; j < value_dim; ++j) y[j] += w * x[j];
    }
  }
}

}  // namespace bucketrt::cpu
