#include "cpu/sorted_chunk_attention.h"

#include "bucketrt/op_specs.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "bucketrt/validate.h"
#include "cpu/simd.h"

namespace bucketrt::cpu {

namespace {

// A comparison sort replaces the counting sort when buckets reach beyond this multiple of N.
constexpr int64_t kCountingSortSlack = 4;

struct Job {
  const ChunkAttentionShape* s;
  const ChunkAttentionPlan* p;
  const float *query, *key, *value;
  const int32_t *mask, *buckets;
  float* out;
  int32_t* positions;  // [B, H, R * N]: position of each sorted slot
  float* round_out;    // [B, H, R, N, D] when R > 1
  float* round_lse;    // [B, H, R, N] when R > 1
  float* worker_scratch;
  std::atomic<int64_t> next{0};
  std::atomic<bool> negative{false};
};

// Phase 1: per (b, h), round by round.
void SortHead(void* data, size_t bh) {
  Job& job = *static_cast<Job*>(data);
  const ChunkAttentionShape& s = *job.s;
  const int64_t N = s.length, R = job.p->rounds;
  int32_t* pos = job.positions + static_cast<int64_t>(bh) * R * N;
  if (job.p->plain) {
    std::iota(pos, pos + N, 0);
    return;
  }
  std::vector<int32_t> counts;
  for (int64_t r = 0; r < R; ++r) {
    const int32_t* bucket = job.buckets + (static_cast<int64_t>(bh) * R + r) * N;
    int32_t* slots = pos + r * N;
    const auto [lo, hi] = std::minmax_element(bucket, bucket + N);
    if (*lo < 0) {
      job.negative.store(true, std::memory_order_relaxed);
      return;
    }
    if (*hi <= kCountingSortSlack * N + 1024) {
      counts.assign(static_cast<size_t>(*hi) + 2, 0);
      for (int64_t n = 0; n < N; ++n) ++counts[static_cast<size_t>(bucket[n]) + 1];
      for (size_t i = 1; i < counts.size(); ++i) counts[i] += counts[i - 1];
      for (int64_t n = 0; n < N; ++n) slots[counts[static_cast<size_t>(bucket[n])]++] = static_cast<int32_t>(n);
    } else {
      std::iota(slots, slots + N, 0);
      std::stable_sort(slots, slots + N, [&](int32_t a, int32_t b) { return bucket[a] < bucket[b]; });
    }
  }
}

// Phase 2: one chunk of the sorted order of one (b, h), as two small matrix products around a
// row-wise softmax: S = Q · K^T over the window, then O = P · V. Both run in register tiles of
// kRows rows x 2 vectors of kLanes columns, so that each loaded key/value vector serves kRows
// queries; the window is padded to whole tiles (padded keys score -inf, i.e. weight 0). Every sum
// runs in the same order (d, then w, ascending) whatever the instruction set.
constexpr int64_t kRows = 4;
constexpr int64_t kLanes = 8;
constexpr int64_t kTile = 2 * kLanes;

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }


// exp over a vector, Cephes' expf: x = n ln2 + r (|r| <= ln2 / 2, ln2 split in two for exactness),
// e^r by a degree-6 polynomial (relative error about 1e-7, like expf), times 2^n through the
// exponent bits. Inputs below -87.3 (masked scores: -1e9, -1e5, -inf) give 2^-126 ~ 1e-38 instead
// of 0, which no sum of weights >= 1 can see; e^0 is exactly 1.
#define BUCKETRT_SPLAT(v) {v, v, v, v, v, v, v, v}
#define BUCKETRT_VEXP(out, in)                                                                     \
  do {                                                                                             \
    const Lanes lo = BUCKETRT_SPLAT(-87.3365448f), hi = BUCKETRT_SPLAT(88.3762626f);               \
    Lanes x_ = (in);                                                                               \
    x_ = x_ < lo ? lo : x_;                                                                        \
    x_ = x_ > hi ? hi : x_;                                                                        \
    const Lanes t_ = x_ * (Lanes)BUCKETRT_SPLAT(1.44269504088896341f) + (Lanes)BUCKETRT_SPLAT(0.5f); \
    IntLanes n_ = __builtin_convertvector(t_, IntLanes);                                           \
    n_ -= (IntLanes)(__builtin_convertvector(n_, Lanes) > t_) & (IntLanes)BUCKETRT_SPLAT(1);        \
    const Lanes fn_ = __builtin_convertvector(n_, Lanes);                                          \
    Lanes r_ = x_ - fn_ * (Lanes)BUCKETRT_SPLAT(0.693359375f);                                     \
    r_ = r_ - fn_ * (Lanes)BUCKETRT_SPLAT(-2.12194440e-4f);                                        \
    Lanes y_ = (Lanes)BUCKETRT_SPLAT(1.9875691500e-4f);                                            \
    y_ = y_ * r_ + (Lanes)BUCKETRT_SPLAT(1.3981999507e-3f);                                        \
    y_ = y_ * r_ + (Lanes)BUCKETRT_SPLAT(8.3334519073e-3f);                                        \
    y_ = y_ * r_ + (Lanes)BUCKETRT_SPLAT(4.1665795894e-2f);                                        \
    y_ = y_ * r_ + (Lanes)BUCKETRT_SPLAT(1.6666665459e-1f);                                        \
    y_ = y_ * r_ + (Lanes)BUCKETRT_SPLAT(5.0000001201e-1f);                                        \
    y_ = y_ * (r_ * r_) + r_ + (Lanes)BUCKETRT_SPLAT(1.0f);                                        \
    const IntLanes e_ = (n_ + (IntLanes)BUCKETRT_SPLAT(127)) << 23;                                \
    Lanes scale_;                                                                                  \
    __builtin_memcpy(&scale_, &e_, sizeof scale_);                                                 \
    (out) = y_ * scale_;                                                                           \
  } while (0)

#define BUCKETRT_KERNELS_INC "cpu/sorted_chunk_attention_kernels.inc"
#include "cpu/instantiate_kernels.inc"
#undef BUCKETRT_KERNELS_INC

void AttendWorker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  float* scratch = job.worker_scratch + worker * job.p->worker_floats;
  const int64_t items = job.s->batch * job.s->heads * job.p->chunks_per_head;
  for (;;) {
    const int64_t item = job.next.fetch_add(1, std::memory_order_relaxed);
    if (item >= items) return;
#ifdef BUCKETRT_HAVE_AVX2_VARIANT
    if (job.p->avx2) {
      avx2::AttendChunk(job, item, scratch);
      continue;
    }
#endif
    generic::AttendChunk(job, item, scratch);
  }
}

// Phase 3: per (b, h), combine the rounds of every position.
void CombineHead(void* data, size_t bh) {
  Job& job = *static_cast<Job*>(data);
  const int64_t N = job.s->length, D = job.s->dim, R = job.p->rounds;
  for (int64_t n = 0; n < N; ++n) {
    const float* lse = job.round_lse + static_cast<int64_t>(bh) * R * N + n;
    float top = -INFINITY;
    for (int64_t r = 0; r < R; ++r) top = std::max(top, lse[r * N]);
    float total = 0.0f;
    for (int64_t r = 0; r < R; ++r) total += std::exp(lse[r * N] - top);
    const float log_total = top + std::log(total);
    float* o = job.out + (static_cast<int64_t>(bh) * N + n) * D;
    std::fill(o, o + D, 0.0f);
    for (int64_t r = 0; r < R; ++r) {
      const float weight = std::exp(lse[r * N] - log_total);
      if (weight < kWeightFloor) continue;  // a round of weight 0 contributes nothing, whatever its output
      const float* src = job.round_out + ((static_cast<int64_t>(bh) * R + r) * N + n) * D;
      for (int64_t d = 0; d < D; ++d) o[d] += weight * src[d];
    }
  }
}

}  // namespace

ChunkAttentionShape ChunkAttentionShapeOf(const Attributes& attrs, const Bindings& env) {
  ChunkAttentionShape s;
  const auto dims = spec::SortedChunkAttention::Dims::From(env);
  s.batch = dims.B;
  s.heads = dims.H;
  s.length = dims.N;
  s.dim = dims.D;
  s.rounds = dims.R;
  s.chunk_length = attrs.Int("chunk_length");
  s.chunks_before = attrs.Int("chunks_before");
  s.chunks_after = attrs.Int("chunks_after");
  // 0 or 1: the spec's allowed values, enforced by ResolveAttributes.
  s.causal = attrs.Int("causal") == 1;
  s.mask_self = attrs.Int("mask_self") == 1;
  return s;
}

std::string PlanChunkAttention(const ChunkAttentionShape& s, int64_t max_length, int64_t max_workers,
                               ChunkAttentionPlan* plan) {
  if (max_length > 0 && s.length > max_length) {
    return Format(
        "SortedChunkAttention: input 'query' has sequence length %lld, beyond the model's limit max_length=%lld",
        static_cast<long long>(s.length), static_cast<long long>(max_length));
  }
  // Positions are int32 (the buckets input's type).
  if (s.length > INT32_MAX) {
    return Format("SortedChunkAttention: input 'query' has sequence length %lld, beyond 2^31 - 1",
                  static_cast<long long>(s.length));
  }
  ChunkAttentionPlan p;
  p.plain = s.length <= s.chunk_length;
  if (!p.plain && s.length % s.chunk_length) {
    return Format(
        "SortedChunkAttention: input 'query' has sequence length %lld, which must be a multiple of "
        "chunk_length=%lld (or at most one chunk)",
        static_cast<long long>(s.length), static_cast<long long>(s.chunk_length));
  }
  p.rounds = p.plain ? 1 : s.rounds;
  p.chunk = p.plain ? s.length : s.chunk_length;
  // Every size below checked: the dims may be an optimisation profile's bounds (TensorRT plans
  // before any data exists), and chunks_before/after are bounded by the spec (<= 64) only.
  const char* op = "SortedChunkAttention";
  int64_t span = 0, slots = 0, heads = 0, items = 0;
  if (!CheckedAdd(s.chunks_before, s.chunks_after, &span) || !CheckedAdd(span, 1, &span)) {
    return SizeOverflowError(op, "the window");
  }
  if (p.plain) {
    p.window = s.length;
  } else if (!CheckedMul(s.chunk_length, span, &p.window)) {
    return SizeOverflowError(op, "the window chunk_length * (1 + chunks_before + chunks_after)");
  }
  if (!CheckedMul(p.rounds, s.length, &slots) || !CheckedMul(s.batch, s.heads, &heads)) {
    return SizeOverflowError(op, "the slots");
  }
  p.chunks_per_head = p.plain ? 1 : slots / s.chunk_length;
  if (!CheckedMul(heads, p.chunks_per_head, &items)) return SizeOverflowError(op, "the chunks");
  p.num_workers = std::max<int64_t>(1, std::min(max_workers, items));
  p.avx2 = UseAvx2();
  const int64_t Cp = RoundUp(p.chunk, kRows), Wp = RoundUp(p.window, kTile), Dp = RoundUp(s.dim, kTile);
  // keys [D][Wp], values [Wp][Dp], queries [Cp][D], scores [Cp][Wp], outputs [Cp][Dp], positions and key flags [2][Wp].
  int64_t worker = 16, term = 0;
  const int64_t terms[][2] = {{s.dim, Wp}, {Wp, Dp}, {Cp, s.dim}, {Cp, Wp}, {Cp, Dp}, {2, Wp}};
  for (const auto& t : terms) {
    if (!CheckedMul(t[0], t[1], &term) || !CheckedAdd(worker, term, &worker)) return SizeOverflowError(op, "the scratch");
  }
  p.worker_floats = static_cast<size_t>(worker);
  int64_t shared = 0, per_round = 0;
  if (!CheckedMul(heads, slots, &shared)) return SizeOverflowError(op, "the scratch");  // positions
  if (p.rounds > 1 &&
      (!CheckedMul(shared, s.dim + 1, &per_round) || !CheckedAdd(shared, per_round, &shared))) {
    return SizeOverflowError(op, "the scratch");
  }
  int64_t total = 0;
  if (!CheckedMul(static_cast<int64_t>(p.num_workers), worker, &total) || !CheckedAdd(total, shared, &total)) {
    return SizeOverflowError(op, "the scratch");
  }
  p.shared_floats = static_cast<size_t>(shared);
  *plan = p;
  return {};
}

std::string ChunkAttention(const ChunkAttentionShape& s, const ChunkAttentionPlan& p, const float* query,
                           const float* key, const float* value, const int32_t* mask, const int32_t* buckets,
                           float* out, float* scratch, const ParallelFor& parallel) {
  const int64_t heads = s.batch * s.heads;
  if (heads == 0 || s.length == 0) return {};
  Job job{&s, &p, query, key, value, mask, buckets, out, nullptr, nullptr, nullptr, nullptr};
  static_assert(sizeof(int32_t) == sizeof(float), "positions share the float scratch");
  const int64_t slots = heads * p.rounds * s.length;
  job.positions = reinterpret_cast<int32_t*>(scratch);
  float* rest = scratch + slots;
  if (p.rounds > 1) {
    job.round_out = rest;
    job.round_lse = rest + slots * s.dim;
    rest = job.round_lse + slots;
  }
  job.worker_scratch = rest;
  parallel(SortHead, static_cast<size_t>(heads), &job);
  if (job.negative.load()) return kNegativeBucketsError;
  parallel(AttendWorker, static_cast<size_t>(p.num_workers), &job);
  if (p.rounds > 1) parallel(CombineHead, static_cast<size_t>(heads), &job);
  return {};
}

}  // namespace bucketrt::cpu
