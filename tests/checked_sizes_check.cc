// The kernels' size arithmetic on extreme shapes and attributes (the bounds an optimisation profile
// or a malicious model may give): every plan returns an error, never wraps. Built with
// -fsanitize=undefined by tests/test_checked_sizes.py, so that any signed overflow aborts.
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>
#include "bucketrt/op_specs.h"
#include "bucketrt/validate.h"
#include "cpu/sign_hash.h"
#include "cpu/argmax_hash.h"
#include "cpu/sorted_chunk_attention.h"
#include "cpu/top1_dispatch.h"
using namespace bucketrt;
int main() {
  int failures = 0;
  auto expect_error = [&](const std::string& e, const char* what) {
    std::printf("%-40s %s\n", what, e.c_str());
    if (e.empty()) ++failures;
  };
  const int64_t big = INT64_MAX / 2;
  cpu::ChunkAttentionShape c{1, 1, 1 << 20, 64, 1, 4, int64_t{1} << 61, int64_t{1} << 61, false, false};
  cpu::ChunkAttentionPlan cp;
  expect_error(cpu::PlanChunkAttention(c, 0, 2, &cp), "chunk: before/after 2^61");
  c.chunks_before = c.chunks_after = INT64_MAX;
  expect_error(cpu::PlanChunkAttention(c, 0, 2, &cp), "chunk: before/after 2^63 - 1");
  c = {big, big, 1 << 20, 64, 4, 4, 1, 0, false, false};
  expect_error(cpu::PlanChunkAttention(c, 0, 2, &cp), "chunk: huge B, H");
  c = {1, 1, int64_t{1} << 40, 64, 4, 4, 1, 0, false, false};
  expect_error(cpu::PlanChunkAttention(c, 0, 2, &cp), "chunk: N 2^40");
  c = {1, 1, 1 << 20, int64_t{1} << 50, 4, 4, 1, 0, false, false};
  expect_error(cpu::PlanChunkAttention(c, 0, 2, &cp), "chunk: D 2^50");
  cpu::SignHashShape s{big, big, 64, 1, 3, 64, 4, 4, true};
  cpu::SignHashPlan sp;
  expect_error(cpu::PlanSignHash(s, 2, &sp), "sign: huge B, N");
  s = {4, 4, 64, 1, 3, 64, INT64_MAX - 1, 1, true};
  expect_error(cpu::PlanSignHash(s, 2, &sp), "sign: num_hash near 2^63 (hadamard)");
  s = {4, 4, 64, 1, 64, 64, INT64_MAX / 3, 30, false};
  expect_error(cpu::PlanSignHash(s, 2, &sp), "sign: num_hash*L overflow (gaussian)");
  s = {4, 4, 64, 1, 64, int64_t{1} << 62, 4, 4, false};
  expect_error(cpu::PlanSignHash(s, 2, &sp), "sign: C 2^62 (gaussian)");
  const int32_t sizes[] = {4, 6};
  expect_error(cpu::CheckBucketSizes(sizes, 2, INT64_MAX / 2, 10), "argmax: num_hash*(sum/2) overflow");
  cpu::Top1DispatchShape t{};
  t.batch = big; t.length = big; t.num_experts = 4;
  expect_error(cpu::CheckTop1DispatchTokens(t), "top1: B*S overflow");
  // ResolveAttributes at the int64 edges.
  for (int64_t v : {INT64_MIN, INT64_MAX, int64_t{1} << 61}) {
    std::vector<RawAttribute> raw(6);
    raw[0].kind = RawAttribute::Kind::kInt; raw[0].int_value = 4;
    raw[1].kind = RawAttribute::Kind::kInt; raw[1].int_value = v;
    Attributes a;
    expect_error(ResolveAttributes(spec::kSortedChunkAttention, raw, &a), "resolve chunks_before edge");
    std::vector<RawAttribute> lsh(2);
    lsh[0].kind = RawAttribute::Kind::kInt; lsh[0].int_value = v;
    expect_error(ResolveAttributes(spec::kLSHCumulation, lsh, &a), "resolve hashtable_capacity edge");
  }
  int64_t out;
  if (CheckedMul(INT64_MAX, 2, &out) || CheckedAdd(INT64_MAX, 1, &out) || CheckedMul(-1, 2, &out)) ++failures;
  std::printf("%d failed\n", failures);
  return failures != 0;
}
