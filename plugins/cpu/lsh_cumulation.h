// LSHCumulation on the CPU, free of any runtime: raw pointers, sizes, a caller-provided scratch
// buffer and a parallel-for. Semantics: src/bucketrt/ops/reference.py `lsh_cumulation`.
//
//   out[b,q,:] = qmask[b,q] * (1/m) * sum_h sum_k kmask[b,k] * [qh[b,q,h] == kh[b,k,h]] * value[b,k,:]
//
// Algorithm: a work item is one batch row b and one slab of D (at most kMaxSlab contiguous
// columns). For a group of hash functions at a time, the item scatter-adds every unmasked key's
// value slab into that hash's table ([rows, slab] floats) at the key's code, then every unmasked
// query adds up table[code] over the group in registers and writes its output slab once per
// group (once in all when every hash's table fits the cache budget together). Masked queries get 0.
// Workers (one scratch slot each) pull items from a shared counter, so uneven masks balance out.
// With slabs of 16 floats (a cache line) and a 512 KiB table budget, B=12, N=4096, D=64, m=32,
// capacity 512 ran about 10x faster than the PyTorch reference on 2 threads (SSE code); slab rows
// are now 8-wide AVX2 vectors where the CPU has AVX2 (cpu/lsh_cumulation_kernels.inc, same sums in
// the same order) and the budget 1 MiB, which took m=64 from ~35 ms to ~22 ms on 2 threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bucketrt/parallel.h"

namespace bucketrt {
class Attributes;  // bucketrt/validate.h
class Bindings;
}  // namespace bucketrt

namespace bucketrt::cpu {

struct LshCumulationShape {
  int64_t batch = 0;
  int64_t num_query = 0;
  int64_t num_key = 0;
  int64_t num_hash = 0;  // m
  int64_t dim = 0;       // D
  int64_t capacity = 0;  // hashtable_capacity, a power of two
};

// The shape of one call: the spec's bindings (symbol -> size, after BindInputs) and resolved
// attributes. Every backend (ORT CPU kernels, CUDA op table) reads them here, so they agree.
LshCumulationShape LshCumulationShapeOf(const Attributes& attrs, const Bindings& env);

// The message for code `code` of input `input` at [b, r, h] outside [0, capacity) (CheckLshCodes'
// words, shared with the backends that find the culprit elsewhere).
std::string LshCodeError(const char* op, const char* input, int32_t code, int64_t b, int64_t r, int64_t h,
                         int64_t capacity);

// Scans the codes of the unmasked rows of `codes` [batch, rows, num_hash] (mask [batch, rows]).
// Returns "" when all lie in [0, capacity) and raises *max_code to their maximum; otherwise
// "<op>: input '<input>' has code C at [b, r, h], outside [0, hashtable_capacity=N)" for the first.
std::string CheckLshCodes(const char* op, const char* input, const int32_t* mask, const int32_t* codes,
                          int64_t batch, int64_t rows, int64_t num_hash, int64_t capacity, int64_t* max_code);

struct LshCumulationPlan {
  static constexpr int64_t kMaxSlab = 16;
  int64_t table_rows = 1;   // power of two <= capacity, above every live code
  int64_t slab = 1;         // columns of D per work item
  int64_t num_slabs = 1;
  int64_t hash_group = 1;   // hash tables filled per pass over the keys
  int64_t num_items = 0;    // batch * num_slabs
  bool avx2 = false;        // run the AVX2 variant (UseAvx2() at planning time)
  int64_t num_workers = 1;  // scratch slots; each pulls items until none are left
  size_t floats_per_worker = 0;
  size_t scratch_floats() const { return static_cast<size_t>(num_workers) * floats_per_worker; }
};

// max_code: the largest live code (CheckLshCodes over both hash inputs; -1 if none).
// max_workers: at most this many scratch slots (the caller's thread count, or a bound on it).
LshCumulationPlan PlanLshCumulation(const LshCumulationShape& shape, int64_t max_code, int64_t max_workers);

// All tensors dense row-major. Live codes must have passed CheckLshCodes; the kernel still masks
// every code into its tables, so no input can make it index outside them. `scratch` holds
// plan.scratch_floats() floats (any content). Runs parallel(fn, plan.num_workers, ...).
void LshCumulation(const LshCumulationShape& shape, const LshCumulationPlan& plan, const int32_t* query_mask,
                   const int32_t* query_hash, const int32_t* key_mask, const int32_t* key_hash, const float* value,
                   float* out, float* scratch, const ParallelFor& parallel);

}  // namespace bucketrt::cpu
