#include "cpu/sorted_chunk_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "bucketrt/validate.h"

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

typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

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

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(BUCKETRT_NO_AVX2)
__attribute__((target_clones("avx2", "default")))
#endif
void AttendChunk(Job& job, int64_t item, float* scratch) {
  const ChunkAttentionShape& s = *job.s;
  const ChunkAttentionPlan& p = *job.p;
  const int64_t N = s.length, D = s.dim, R = p.rounds, C = p.chunk, W = p.window;
  const int64_t Cp = RoundUp(C, kRows), Wp = RoundUp(W, kTile), Dp = RoundUp(D, kTile);
  const int64_t bh = item / p.chunks_per_head, c = item % p.chunks_per_head;
  const int64_t b = bh / s.heads;
  const int32_t* pos = job.positions + bh * R * N;
  const float* q_head = job.query + bh * N * D;
  const float* k_head = job.key + bh * N * D;
  const float* v_head = job.value + bh * N * D;
  const int32_t* live = job.mask + b * N;

  float* keys_t = scratch;              // [D][Wp]
  float* values = keys_t + D * Wp;      // [Wp][Dp]
  float* queries = values + Wp * Dp;    // [Cp][D]
  float* scores = queries + Cp * D;     // [Cp][Wp], then the weights
  float* outs = scores + Cp * Wp;       // [Cp][Dp]
  int32_t* window_pos = reinterpret_cast<int32_t*>(outs + Cp * Dp);  // [Wp], -1 for padding; then key_dead [Wp]

  // Gather the window (chunks c - before .. c + after of the sorted order, wrapping) and queries.
  const int64_t span = p.plain ? 1 : 1 + s.chunks_before + s.chunks_after;
  for (int64_t j = 0, w = 0; j < span; ++j) {
    const int64_t shift = p.plain ? 0 : j - s.chunks_before;
    const int64_t src = ((c + shift) % p.chunks_per_head + p.chunks_per_head) % p.chunks_per_head;
    for (int64_t i = 0; i < C; ++i, ++w) {
      const int32_t kp = pos[src * C + i];
      window_pos[w] = kp;
      const float* k = k_head + kp * D;
      for (int64_t d = 0; d < D; ++d) keys_t[d * Wp + w] = k[d];
      std::copy(v_head + kp * D, v_head + kp * D + D, values + w * Dp);
      std::fill(values + w * Dp + D, values + (w + 1) * Dp, 0.0f);
    }
  }
  for (int64_t w = W; w < Wp; ++w) {
    window_pos[w] = -1;
    for (int64_t d = 0; d < D; ++d) keys_t[d * Wp + w] = 0.0f;
    std::fill(values + w * Dp, values + (w + 1) * Dp, 0.0f);
  }
  for (int64_t i = 0; i < Cp; ++i) {
    if (i < C) {
      const float* q = q_head + static_cast<int64_t>(pos[c * C + i]) * D;
      std::copy(q, q + D, queries + i * D);
    } else {
      std::fill(queries + i * D, queries + (i + 1) * D, 0.0f);
    }
  }

  // S = Q · K^T.
  for (int64_t i0 = 0; i0 < Cp; i0 += kRows) {
    for (int64_t w0 = 0; w0 < Wp; w0 += kTile) {
      Lanes acc[kRows][2] = {};
      for (int64_t d = 0; d < D; ++d) {
        Lanes k0, k1;
        __builtin_memcpy(&k0, keys_t + d * Wp + w0, sizeof k0);
        __builtin_memcpy(&k1, keys_t + d * Wp + w0 + kLanes, sizeof k1);
        for (int64_t r = 0; r < kRows; ++r) {
          const float qv = queries[(i0 + r) * D + d];
          Lanes qb = {qv, qv, qv, qv, qv, qv, qv, qv};
          acc[r][0] += qb * k0;
          acc[r][1] += qb * k1;
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        __builtin_memcpy(scores + (i0 + r) * Wp + w0, &acc[r][0], sizeof(Lanes));
        __builtin_memcpy(scores + (i0 + r) * Wp + w0 + kLanes, &acc[r][1], sizeof(Lanes));
      }
    }
  }

  // Masks and softmax weights, row by row, kLanes keys at a time.
  float lse[kRows * 64];
  float* row_lse = C <= kRows * 64 ? lse : nullptr;
  std::vector<float> lse_heap;
  if (!row_lse) {
    lse_heap.resize(static_cast<size_t>(C));
    row_lse = lse_heap.data();
  }
  // Per window key: its position (-1: padding of the tile) and whether it may be attended at all.
  int32_t* key_dead = window_pos + Wp;  // [Wp]: -1 where padding or masked, 0 otherwise
  for (int64_t w = 0; w < Wp; ++w) key_dead[w] = (window_pos[w] < 0 || live[window_pos[w]] == 0) ? -1 : 0;
  for (int64_t i = 0; i < C; ++i) {
    const int32_t qp = pos[c * C + i];
    float* row = scores + i * Wp;
    const IntLanes qv = BUCKETRT_SPLAT(qp);
    const Lanes masked = BUCKETRT_SPLAT(kMaskedScore), self = BUCKETRT_SPLAT(kSelfScore);
    const Lanes none = BUCKETRT_SPLAT(-INFINITY);
    Lanes top = none;
    for (int64_t w = 0; w < Wp; w += kLanes) {
      Lanes sv;
      IntLanes kp, dead;
      __builtin_memcpy(&sv, row + w, sizeof sv);
      __builtin_memcpy(&kp, window_pos + w, sizeof kp);
      __builtin_memcpy(&dead, key_dead + w, sizeof dead);
      IntLanes off = dead;
      if (s.causal) off |= (IntLanes)(kp > qv);
      sv = off ? masked : sv;
      if (s.mask_self) sv = (IntLanes)(kp == qv) ? self : sv;
      sv = (IntLanes)(kp < 0) ? none : sv;  // tile padding: weight 0
      __builtin_memcpy(row + w, &sv, sizeof sv);
      top = sv > top ? sv : top;
    }
    float max_score = top[0];
    for (int64_t l = 1; l < kLanes; ++l) max_score = std::max(max_score, top[l]);
    const Lanes shift = BUCKETRT_SPLAT(max_score);
    Lanes sum = {};
    for (int64_t w = 0; w < Wp; w += kLanes) {
      Lanes sv, ev;
      __builtin_memcpy(&sv, row + w, sizeof sv);
      BUCKETRT_VEXP(ev, sv - shift);
      ev = (IntLanes)(sv == none) ? (Lanes){} : ev;
      __builtin_memcpy(row + w, &ev, sizeof ev);
      sum += ev;
    }
    float total = 0.0f;
    for (int64_t l = 0; l < kLanes; ++l) total += sum[l];
    // Weights exp(score - lse) with lse rounded to float, as Reformer computes them: where every
    // score is -1e9, lse == -1e9 in float and each weight is 1 (the values' sum, not their mean).
    const float l = max_score + std::log(total);
    const Lanes scale = BUCKETRT_SPLAT(std::exp(max_score - l));
    for (int64_t w = 0; w < Wp; w += kLanes) {
      Lanes ev;
      __builtin_memcpy(&ev, row + w, sizeof ev);
      ev *= scale;
      __builtin_memcpy(row + w, &ev, sizeof ev);
    }
    row_lse[i] = l;
  }
  for (int64_t i = C; i < Cp; ++i) std::fill(scores + i * Wp, scores + (i + 1) * Wp, 0.0f);

  // O = P · V.
  for (int64_t i0 = 0; i0 < Cp; i0 += kRows) {
    for (int64_t d0 = 0; d0 < Dp; d0 += kTile) {
      Lanes acc[kRows][2] = {};
      for (int64_t w = 0; w < Wp; ++w) {
        Lanes v0, v1;
        __builtin_memcpy(&v0, values + w * Dp + d0, sizeof v0);
        __builtin_memcpy(&v1, values + w * Dp + d0 + kLanes, sizeof v1);
        for (int64_t r = 0; r < kRows; ++r) {
          const float pv = scores[(i0 + r) * Wp + w];
          Lanes pb = {pv, pv, pv, pv, pv, pv, pv, pv};
          acc[r][0] += pb * v0;
          acc[r][1] += pb * v1;
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        __builtin_memcpy(outs + (i0 + r) * Dp + d0, &acc[r][0], sizeof(Lanes));
        __builtin_memcpy(outs + (i0 + r) * Dp + d0 + kLanes, &acc[r][1], sizeof(Lanes));
      }
    }
  }

  for (int64_t i = 0; i < C; ++i) {
    const int64_t slot = c * C + i;
    const int32_t qp = pos[slot];
    const int64_t round = slot / N;
    float* o = R > 1 ? job.round_out + ((bh * R + round) * N + qp) * D : job.out + (bh * N + qp) * D;
    std::copy(outs + i * Dp, outs + i * Dp + D, o);
    if (R > 1) job.round_lse[(bh * R + round) * N + qp] = row_lse[i];
  }
}

void AttendWorker(void* data, size_t worker) {
  Job& job = *static_cast<Job*>(data);
  float* scratch = job.worker_scratch + worker * job.p->worker_floats;
  const int64_t items = job.s->batch * job.s->heads * job.p->chunks_per_head;
  for (;;) {
    const int64_t item = job.next.fetch_add(1, std::memory_order_relaxed);
    if (item >= items) return;
    AttendChunk(job, item, scratch);
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
      const float* src = job.round_out + ((static_cast<int64_t>(bh) * R + r) * N + n) * D;
      for (int64_t d = 0; d < D; ++d) o[d] += weight * src[d];
    }
  }
}

}  // namespace

std::string PlanChunkAttention(const ChunkAttentionShape& s, int64_t max_length, int64_t max_workers,
                               ChunkAttentionPlan* plan) {
  if (max_length > 0 && s.length > max_length) {
    return Format(
        "SortedChunkAttention: input 'query' has sequence length %lld, beyond the model's limit max_length=%lld",
        static_cast<long long>(s.length), static_cast<long long>(max_length));
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
  p.window = p.plain ? s.length : s.chunk_length * (1 + s.chunks_before + s.chunks_after);
  p.chunks_per_head = p.plain ? 1 : p.rounds * s.length / s.chunk_length;
  const int64_t items = s.batch * s.heads * p.chunks_per_head;
  p.num_workers = std::max<int64_t>(1, std::min(max_workers, items));
  const int64_t Cp = RoundUp(p.chunk, kRows), Wp = RoundUp(p.window, kTile), Dp = RoundUp(s.dim, kTile);
  // keys [D][Wp], values [Wp][Dp], queries [Cp][D], scores [Cp][Wp], outputs [Cp][Dp], positions and key flags [2][Wp].
  p.worker_floats = static_cast<size_t>(s.dim * Wp + Wp * Dp + Cp * s.dim + Cp * Wp + Cp * Dp + 2 * Wp + 16);
  const size_t heads = static_cast<size_t>(s.batch * s.heads);
  p.shared_floats = heads * static_cast<size_t>(p.rounds * s.length);  // positions
  if (p.rounds > 1) p.shared_floats += heads * static_cast<size_t>(p.rounds * s.length * (s.dim + 1));
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
  if (job.negative.load()) return "SortedChunkAttention: input 'buckets' must be >= 0";
  parallel(AttendWorker, static_cast<size_t>(p.num_workers), &job);
  if (p.rounds > 1) parallel(CombineHead, static_cast<size_t>(heads), &job);
  return {};
}

}  // namespace bucketrt::cpu
