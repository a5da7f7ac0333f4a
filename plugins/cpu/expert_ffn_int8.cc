#include "cpu/expert_ffn_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cpu/simd_switch.h"

namespace bucketrt::cpu {
namespace {

// Rows per tile: the tile's uint8 rows (at most 64 x 64 KiB, 192 KiB at d_ff 3072) stay in L2
// while each block of weight rows streams past them once.
constexpr int64_t kMaxTileRows = 64;
constexpr int64_t kMinTileRows = 16;
constexpr int64_t kTilesPerWorker = 8;  // with output-channel slices
constexpr int64_t kMinSlice = 64;  // output channels: the narrowest slice worth a tile
constexpr int64_t kQuantizeBlock = 32;  // rows per quantization task

struct Rows {
  uint8_t* q;  // [listed, k_len]
  float* scale;
  int32_t* zero_point;
};

// Quantizes rows [begin, end) of `listed`: row i is source[index(i)].
struct QuantizeJob {
  const float* source;
  const int32_t* order;  // null: row i is source row i
  int64_t k_len;
  int64_t listed;
  Rows rows;
};

void QuantizeBlock(void* data, size_t block) {
  static const QuantizeRowFn quantize_row = PickQuantizeRow();
  const QuantizeJob& job = *static_cast<const QuantizeJob*>(data);
  const int64_t begin = static_cast<int64_t>(block) * kQuantizeBlock;
  const int64_t end = std::min(job.listed, begin + kQuantizeBlock);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t src = job.order ? job.order[i] : i;
    quantize_row(job.source + src * job.k_len, job.k_len, job.rows.q + i * job.k_len, job.rows.scale + i,
                job.rows.zero_point + i);
  }
}

void Quantize(const QuantizeJob& job, int64_t workers, ParallelFor parallel_for) {
  const int64_t blocks = (job.listed + kQuantizeBlock - 1) / kQuantizeBlock;
  if (blocks <= 1 || workers == 1) {
    for (int64_t b = 0; b < blocks; ++b) QuantizeBlock(const_cast<QuantizeJob*>(&job), static_cast<size_t>(b));
  } else {
    parallel_for(QuantizeBlock, static_cast<size_t>(blocks), const_cast<QuantizeJob*>(&job));
  }
}

struct Tile {
  int64_t expert;
  int64_t start;  // position in `order`
  int64_t rows;
  int64_t n0, n1;  // output channels
};

// One layer's tiles: rows of `in` (quantized, k_len wide) times the expert's int8 weights [N, k_len].
struct LayerJob {
  const ExpertFfnInt8Plan* plan;
  const Tile* tiles;
  int64_t num_tiles;
  Rows in;
  int64_t k_len;
  int64_t n_len;
  const int8_t* w;       // [E, N, k_len]
  const float* w_scale;  // [E, N]
  Int8GemmFn gemm;
  // First layer: act into h [listed, N]. Second: times the gate into out's rows.
  bool first;
  Activation act;
  ExpertActivateFn activate;
  float* h;
  const int32_t* order;
  const float* gate;
  float* out;
  uint8_t* scratch;
  std::atomic<int64_t> next{0};
};

void LayerWorker(void* data, size_t worker) {
  LayerJob& job = *static_cast<LayerJob*>(data);
  int32_t* acc = reinterpret_cast<int32_t*>(job.scratch + worker * job.plan->scratch_per_worker);
  int32_t* colsum = acc + job.plan->tile_rows * job.plan->max_width;
  for (int64_t i = job.next.fetch_add(1); i < job.num_tiles; i = job.next.fetch_add(1)) {
    const Tile& t = job.tiles[i];
    const int64_t width = t.n1 - t.n0;
    const int8_t* w = job.w + (t.expert * job.n_len + t.n0) * job.k_len;
    const float* w_scale = job.w_scale + t.expert * job.n_len + t.n0;
    job.gemm(job.in.q + t.start * job.k_len, t.rows, w, width, job.k_len, acc, width, colsum);
    for (int64_t r = 0; r < t.rows; ++r) {
      const int64_t i_row = t.start + r;
      const float s = job.in.scale[i_row];
      const int64_t zp = job.in.zero_point[i_row];
      const int32_t* a = acc + r * width;
      if (job.first) {
        float* h = job.h + i_row * job.n_len + t.n0;
        for (int64_t n = 0; n < width; ++n) {
          h[n] = static_cast<float>(a[n] - zp * colsum[n]) * (s * w_scale[n]);
        }
      } else {
        const int64_t token = job.order[i_row];
        const float g = job.gate[token];
        float* o = job.out + token * job.n_len + t.n0;
        for (int64_t n = 0; n < width; ++n) {
          o[n] = (static_cast<float>(a[n] - zp * colsum[n]) * (s * w_scale[n])) * g;
        }
      }
    }
    if (job.first) job.activate(job.act, job.h + t.start * job.n_len + t.n0, t.rows, width, job.n_len);
  }
}

std::vector<Tile> MakeTiles(const ExpertFfnInt8Plan& plan, const int32_t* counts, int64_t num_experts, int64_t n_len,
                            int64_t chunks) {
  std::vector<Tile> tiles;
  const int64_t slice = (n_len + chunks - 1) / chunks;
  int64_t start = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t r = 0; r < counts[e]; r += plan.tile_rows) {
      for (int64_t n0 = 0; n0 < n_len; n0 += slice) {
        tiles.push_back({e, start + r, std::min(plan.tile_rows, counts[e] - r), n0, std::min(n_len, n0 + slice)});
      }
    }
    start += counts[e];
  }
  // Largest first: workers pulling from the counter then finish close together (LPT scheduling).
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const Tile& a, const Tile& b) { return a.rows * (a.n1 - a.n0) > b.rows * (b.n1 - b.n0); });
  return tiles;
}

void RunLayer(LayerJob& job, ParallelFor parallel_for) {
  const int64_t workers = std::min(job.plan->workers, job.num_tiles);
  if (workers <= 1) {
    LayerWorker(&job, 0);
  } else {
    parallel_for(LayerWorker, static_cast<size_t>(workers), &job);
  }
}

size_t Align(size_t bytes) { return (bytes + 63) / 64 * 64; }

}  // namespace

ExpertFfnInt8Shape ExpertFfnInt8ShapeOf(const Attributes& /*attrs*/, const Bindings& env) {
  ExpertFfnInt8Shape s;
  const auto dims = spec::ExpertFFNInt8::Dims::From(env);
  s.tokens = dims.B * dims.S;
  s.dim = dims.D;
  s.ff = dims.F;
  s.num_experts = dims.E;
  return s;
}

std::string CheckExpertFfnInt8Shape(const ExpertFfnInt8Shape& shape) {
  if (shape.dim > spec::kMaxInt8SumLength) {
    return Format("ExpertFFNInt8: input 'wi' dim 2 (D) is %lld, more than %lld (the int32 sums could overflow)",
                  static_cast<long long>(shape.dim), static_cast<long long>(spec::kMaxInt8SumLength));
  }
  if (shape.ff > spec::kMaxInt8SumLength) {
    return Format("ExpertFFNInt8: input 'wo' dim 2 (F) is %lld, more than %lld (the int32 sums could overflow)",
                  static_cast<long long>(shape.ff), static_cast<long long>(spec::kMaxInt8SumLength));
  }
  return {};
}

ExpertFfnInt8Plan PlanExpertFfnInt8(const ExpertFfnInt8Shape& shape, const int32_t* counts, int64_t max_workers) {
  ExpertFfnInt8Plan plan;
  max_workers = std::max<int64_t>(1, max_workers);
  for (int64_t e = 0; e < shape.num_experts; ++e) plan.listed += counts[e];
  const int64_t per_worker = (plan.listed + 2 * max_workers - 1) / (2 * max_workers);
  plan.tile_rows = std::clamp<int64_t>(per_worker, std::min<int64_t>(kMinTileRows, std::max<int64_t>(plan.listed, 1)),
                                       kMaxTileRows);
  int64_t row_tiles = 0;
  for (int64_t e = 0; e < shape.num_experts; ++e) row_tiles += (counts[e] + plan.tile_rows - 1) / plan.tile_rows;
  // Slice the output channels until there are kTilesPerWorker tiles per worker.
  auto chunks = [&](int64_t n_len) -> int64_t {
    if (max_workers == 1 || row_tiles == 0) return 1;
    const int64_t wanted = (kTilesPerWorker * max_workers + row_tiles - 1) / row_tiles;
    return std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, n_len / kMinSlice));
  };
  plan.ff_chunks = chunks(shape.ff);
  plan.dim_chunks = chunks(shape.dim);
  plan.workers = max_workers;
  plan.max_width = std::max((shape.ff + plan.ff_chunks - 1) / plan.ff_chunks,
                            (shape.dim + plan.dim_chunks - 1) / plan.dim_chunks);
  plan.scratch_per_worker = Align(sizeof(int32_t) * static_cast<size_t>((plan.tile_rows + 1) * plan.max_width));
  return plan;
}

size_t ExpertFfnInt8Plan::scratch_bytes(const ExpertFfnInt8Shape& s) const {
  const size_t n = static_cast<size_t>(listed);
  return Align(n * static_cast<size_t>(s.dim)) +
         Align(n * static_cast<size_t>(s.ff)) +
         Align(n * static_cast<size_t>(s.ff) * sizeof(float)) + 4 * Align(n * sizeof(float)) +
         static_cast<size_t>(workers) * scratch_per_worker + 64;
}

void ExpertFfnInt8(const ExpertFfnInt8Shape& shape, const ExpertFfnInt8Plan& plan, Activation act,
                   const float* hidden, const int32_t* order, const int32_t* counts, const float* gate,
                   const int8_t* wi, const float* wi_scale, const int8_t* wo, const float* wo_scale, float* out,
                   void* scratch, ParallelFor parallel_for) {
  // Dropped tokens (and any not listed) get zero; the second layer overwrites the listed ones.
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(shape.tokens * shape.dim));
  if (plan.listed == 0) return;
  const size_t n = static_cast<size_t>(plan.listed);
  uint8_t* next = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  auto take = [&](size_t bytes) {
    uint8_t* p = next;
    next += Align(bytes);
    return p;
  };
  Rows x{take(n * shape.dim), reinterpret_cast<float*>(take(n * sizeof(float))),
         reinterpret_cast<int32_t*>(take(n * sizeof(float)))};
  Rows hq{take(n * shape.ff), reinterpret_cast<float*>(take(n * sizeof(float))),
          reinterpret_cast<int32_t*>(take(n * sizeof(float)))};
  float* h = reinterpret_cast<float*>(take(n * shape.ff * sizeof(float)));
  uint8_t* workers = next;

  static const Int8GemmFn gemm = PickInt8Gemm();  // the CPU and BUCKETRT_SIMD, looked at once
  static const ExpertActivateFn activate = PickExpertActivate();

  Quantize(QuantizeJob{hidden, order, shape.dim, plan.listed, x}, plan.workers, parallel_for);
  const std::vector<Tile> first = MakeTiles(plan, counts, shape.num_experts, shape.ff, plan.ff_chunks);
  LayerJob one{&plan, first.data(), static_cast<int64_t>(first.size()), x, shape.dim, shape.ff, wi, wi_scale, gemm,
               true, act, activate, h, order, gate, out, workers};
  RunLayer(one, parallel_for);
  Quantize(QuantizeJob{h, nullptr, shape.ff, plan.listed, hq}, plan.workers, parallel_for);
  const std::vector<Tile> second = MakeTiles(plan, counts, shape.num_experts, shape.dim, plan.dim_chunks);
  LayerJob two{&plan, second.data(), static_cast<int64_t>(second.size()), hq, shape.ff, shape.dim, wo, wo_scale,
               gemm, false, act, activate, h, order, gate, out, workers};
  RunLayer(two, parallel_for);
}

}  // namespace bucketrt::cpu
