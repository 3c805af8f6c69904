// The CUDA backend behind the seam of core/backends.hpp: support checks, the workspace, and the
// launch sequences of estimate and attention (no allocation, no synchronisation).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include "core/backends.hpp"
#include "core/rules.hpp"
#include "cuda/attention.cuh"
#include "cuda/attention_kernel.hpp"
#include "cuda/estimate.cuh"
#include "cuda/hopper/attention_sm90.cuh"
#include "cuda/layout.hpp"
#include "cuda/runtime.hpp"

namespace proxyattn::detail::cuda {
namespace {

constexpr int kWorkBits = 14;  // row lengths are at most kMaxBlocks = 8192 < 2^14

constexpr int kMaxKvMajorHeads = 1024;  // kv head numbers above the work bits: 24-bit keys at most

// Index of the environment variable's value in `names`; unset or empty gives 0 (the default).
// Any other value is an error that lists the names. The A/B switches below read it once each.
int env_choice(const char* var, std::initializer_list<const char*> names) {
  const char* s = std::getenv(var);
  if (!s || !*s) return 0;
  int i = 0;
  for (const char* n : names) {
    if (std::strcmp(s, n) == 0) return i;
    ++i;
  }
  std::string list;
  i = 0;
  for (const char* n : names) {
    list += i == 0 ? "" : i + 1 == static_cast<int>(names.size()) ? " or " : ", ";
    list += n;
    ++i;
  }
  fail(ErrorCode::invalid_argument, var, " must be ", list, ", got '", s, "'");
}

// The environment variable's integer value in [lo, hi]; unset or empty gives `fallback`, and
// anything else is an error that names the variable, the range and the value.
int env_int(const char* var, int lo, int hi, int fallback) {
  const char* s = std::getenv(var);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || errno != 0 || v < lo || v > hi)
    fail(ErrorCode::invalid_argument, var, " must be an integer in [", lo, ", ", hi, "], got '", s, "'");
  return static_cast<int>(v);
}

// The order of the attention schedule. kv (the default): kv heads one after the other, so that
// the CTAs running at one time read the K/V of one kv head and L2 serves most of their tiles
// (with every head at once, a sparse mask's tiles are spread over all of K and V, far more than
// L2 holds). Within a kv head the rows go longest first, or shortest first in every other kv head
// (the last one longest first, so that the schedule ends on short rows): the persistent kernel
// deals the list out in rounds, one item per CTA, and its snake order balances the CTAs' totals
// only over a list that is sorted; with every kv head longest first, a round that straddles two
// kv heads pairs the shortest rows of one with the longest of the next, and the same CTAs take
// the long ones twice (at 16K, Llama shapes, the busiest CTA had 24% more work than the mean;
// zigzag: 0.1%). length: longest rows first over all heads.
// PROXYATTN_SCHEDULE=kv|length picks for A/B runs.
bool kv_order() {
  static const bool kv = env_choice("PROXYATTN_SCHEDULE", {"kv", "length"}) == 0;
  return kv;
}

// Whether the schedule's sort keys carry the kv head (kv order, and few enough kv heads).
bool kv_major(int kv_heads) { return kv_order() && kv_heads <= kMaxKvMajorHeads; }

// Bits of a schedule sort key: the work of a row, and above it the kv head when kv_major.
int schedule_key_bits(int kv_heads) {
  int bits = kWorkBits;
  while (kv_major(kv_heads) && (1 << (bits - kWorkBits)) < kv_heads) ++bits;
  return bits;
}

// L2 eviction priorities on the Hopper kernel's copies (Q first, K and V last); on by default,
// PROXYATTN_L2_HINTS=0 turns them off for A/B runs.
bool l2_hints() {
  static const bool on = env_choice("PROXYATTN_L2_HINTS", {"1", "0"}) == 0;
  return on;
}

// At most this many CTAs in the persistent Hopper grid (default: one per multiprocessor).
// PROXYATTN_PERSISTENT_CTAS=3 makes each CTA walk many work items even in small tests, the
// path that long inputs take (item hand-over, Q stages, the tile stream across items).
int persistent_cta_limit() {
  static const int limit = env_int("PROXYATTN_PERSISTENT_CTAS", 1, 1 << 20, 0);
  return limit;
}

struct State {
  Tables tables;
  Regions regions;
};

State& state(const Plan::Impl& p) { return *static_cast<State*>(p.backend_state.get()); }

// Calls f.template operator()<T, D>() for the plan's dtype and head dim: the one place that
// maps runtime values to kernel instantiations.
template <class F>
void dispatch(DType dtype, int dim, F&& f) {
  auto by_dim = [&]<class T>() {
    switch (dim) {
      case 64: f.template operator()<T, 64>(); return;
      case 128: f.template operator()<T, 128>(); return;
      case 256: f.template operator()<T, 256>(); return;
      default: fail(ErrorCode::unsupported, "the CUDA backend takes head_dim 64, 128 or 256, got ", dim);
    }
  };
  if (dtype == DType::bfloat16)
    by_dim.template operator()<__nv_bfloat16>();
  else if (dtype == DType::float16)
    by_dim.template operator()<__half>();
  else
    fail(ErrorCode::unsupported, "the CUDA backend takes float16 or bfloat16, got ", dtype_name(dtype));
}

void check_operand(const char* name, const TensorView& t) {
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0)
    fail(ErrorCode::unsupported, name, " must be 16-byte aligned on cuda, got address ", t.data);
  // The kernels step through tokens with 32-bit row offsets (up to 128 rows a tile); the head
  // stride is only used in 64-bit arithmetic, so [batch, heads, seqlen, dim] layouts of any length pass.
  if (t.stride[0] >= (1 << 24))
    fail(ErrorCode::unsupported, name, " token stride must be below 2^24 elements on cuda, got ", t.stride[0]);
  if (t.stride[0] % 8 != 0 || t.stride[1] % 8 != 0)
    fail(ErrorCode::unsupported, name, " token and head strides must be multiples of 8 elements on cuda, got [",
         t.stride[0], ", ", t.stride[1], "]");
}

int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

// Sort keys of the attention schedule (sorted descending): kept blocks of each row (or m + 1
// when dense), below (kv_heads - 1 - kv head) when kv_major; in the kv heads that go shortest
// first (kv_order), the complement of the work.
__global__ void schedule_keys_kernel(const std::int64_t* row_offsets, const std::int32_t* block_seq,
                                     const std::int32_t* block_offset, const std::int32_t* first_block, int q_heads,
                                     int gqa_ratio, int kv_heads, bool kv_major, int rows, std::int32_t* keys,
                                     std::int32_t* ids) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  std::int64_t work;
  if (row_offsets) {
    work = row_offsets[r + 1] - row_offsets[r];
  } else {
    const int b = r / q_heads, s = block_seq[b];
    work = b - block_offset[s] + first_block[s] + 1;
  }
  const int clamped = static_cast<int>(work < 0 ? 0 : work >= (1 << kWorkBits) ? (1 << kWorkBits) - 1 : work);
  const int kvh = (r % q_heads) / gqa_ratio;
  const int place = kv_heads - 1 - kvh;  // 0: the kv head that runs last
  const int ascending = kv_major && (place & 1);
  keys[r] = kv_major ? (place << kWorkBits) | (ascending ? (1 << kWorkBits) - 1 - clamped : clamped) : clamped;
  ids[r] = r;
}

// Which kernels run: the Hopper ones (sm_90a: TMA, wgmma) wherever they can (an sm_90 device,
// this build's sm_90a code, operands a tensor map accepts), else the portable ones (sm_80
// mma.sync). PROXYATTN_KERNEL, read once, picks for A/B runs: hopper (the default, a persistent
// attention grid), hopper-grid (one attention CTA per work item), portable (attention and the
// estimator's stage 1 + 3 on the portable kernels).
enum class KernelMode { hopper, hopper_grid, portable };  // in the order of env_choice's names

KernelMode kernel_mode() {
  static const auto mode = static_cast<KernelMode>(env_choice("PROXYATTN_KERNEL", {"hopper", "hopper-grid", "portable"}));
  return mode;
}

// The estimator's stage 1 + 3 on Hopper: auto (the default) runs the wgmma kernel where its
// CTAs (groups of query blocks times the split, up to 8) fill at least half the GPU, hopper
// wherever it can run (tests of small inputs), portable never. PROXYATTN_STAGE1, read once,
// picks; PROXYATTN_KERNEL=portable also means portable here.
enum class Stage1Mode { automatic, hopper, portable };  // in the order of env_choice's names

Stage1Mode stage1_mode() {
  static const auto mode = static_cast<Stage1Mode>(env_choice("PROXYATTN_STAGE1", {"auto", "hopper", "portable"}));
  return mode;
}

// Into how many CTAs (a cluster) the Hopper stage 1 splits each group's keys: 0 (the default)
// lets the launcher choose; PROXYATTN_STAGE1_SPLIT=1..8 fixes it (A/B runs, tests).
int stage1_split() {
  static const int split = env_int("PROXYATTN_STAGE1_SPLIT", 0, 8, 0);
  return split;
}

// The estimator's stage 2 on Hopper: hopper (the default) wherever it can run, portable never;
// PROXYATTN_STAGE2, read once, picks (A/B runs); PROXYATTN_KERNEL=portable also means portable.
bool stage2_on_hopper() {
  static const bool hopper = env_choice("PROXYATTN_STAGE2", {"hopper", "portable"}) == 0;
  return hopper;
}

thread_local const char* last_kernel = "";

// Whether the Hopper kernels may run on the plan's device: an sm_90 device and a mode other
// than portable (each kernel still checks that this build has its sm_90a code).
bool hopper_device(const Plan::Impl& p) {
  if (kernel_mode() == KernelMode::portable) return false;
  int major = 0, minor = 0;
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.problem.device_index));
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, p.problem.device_index));
  return major == 9 && minor == 0;
}

// The device where the estimator's stage 2 runs on wgmma, or -1 (the portable kernel).
int stage2_device(const Plan::Impl& p) {
  if (!stage2_on_hopper() || !hopper_device(p)) return -1;
  bool runs = false;
  dispatch(p.problem.dtype, p.problem.head_dim,
           [&]<class T, int D>() { runs = stage2_sm90_runs<T, D>(p.problem.device_index); });
  return runs ? p.problem.device_index : -1;
}

// L2 priorities of the Hopper kernel's K/V copies by key position, an A/B switch. Unset (the
// default): all K/V evict_last. PROXYATTN_L2_PIN_PERCENT=N: the K/V of each sequence's first
// keys evict_last and the rest evict_normal, with the bound set so that the pinned part of the
// kv heads read at one time (one in kv order) fills N% of L2. At 75% Llama-3.1-8B's dense case
// ran 1-2% faster, but Qwen2.5-7B's 10% case 3-4% and Gemma-2-9B's dense case 3.5% slower, so
// it is not the default.
int l2_pin_percent() {
  static const int percent = env_int("PROXYATTN_L2_PIN_PERCENT", 0, 100, -1);
  return percent;
}

// The Hopper kernel's key bound (key_bytes: one key's K or V; by_kv: the schedule goes kv head
// by kv head): INT32_MAX (everything evict_last) when the switch is unset.
int l2_pin_keys(const Plan::Impl& p, int key_bytes, bool by_kv) {
  if (l2_pin_percent() < 0) return INT32_MAX;
  int l2 = 0;
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, p.problem.device_index));
  const std::int64_t heads = by_kv ? 1 : p.problem.kv_heads;
  const std::int64_t keys = static_cast<std::int64_t>(l2) * l2_pin_percent() / 100 / (2 * key_bytes * heads);
  return static_cast<int>(std::min<std::int64_t>(keys, INT32_MAX));
}

// CTAs of the persistent Hopper grid where that kernel runs (the one-CTA-per-item launches and the
// portable kernel leave the order of items to the hardware: 0).
int persistent_grid(const Plan::Impl& p) {
  if (kernel_mode() != KernelMode::hopper || !hopper_device(p)) return 0;
  int sms = 0;
  PROXYATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, p.problem.device_index));
  const int limit = persistent_cta_limit();
  return limit > 0 ? std::min(sms, limit) : sms;
}

// Launches the sparse attention of ap with the kernel that the mode and the device allow; grid:
// persistent_grid(p), which the schedule was sorted for.
void launch_attention(const Plan::Impl& p, const AttentionParams& ap, int grid, cudaStream_t stream) {
  const bool hopper = hopper_device(p);
  dispatch(p.problem.dtype, p.problem.head_dim, [&]<class T, int D>() {
    if constexpr (sm90::supports_head_dim(D)) {
      sm90::TileMaps maps;
      if (hopper && sm90::kernel_available<T, D>(p.problem.device_index) &&
          sm90::make_tile_maps(ap, Elem<T>::is_bf16, D, p.problem.kv_heads, &maps)) {
        const bool persistent = grid > 0;  // else PROXYATTN_KERNEL=hopper-grid
        sm90::launch_sparse_attention_sm90<T, D>(ap, maps, persistent, grid, stream);
        last_kernel = persistent ? "hopper" : "hopper-grid";
        return;
      }
    }
    launch_sparse_attention<T, D>(ap, stream);
    last_kernel = "portable";
  });
}

// Where the keys of a call live: packed by cu_seqlens_k, or in the pages of the call's block table
// (the API layer sets it on the plan for the call; k is then the view of every page as tokens).
KvRows kv_rows(const Plan::Impl& p, const Regions& r, const TensorView& k) {
  KvRows kv{};
  kv.cu_seqlens_k = r.cu_seqlens_k;
  kv.table = p.block_table;
  kv.table_stride = p.table_stride;
  kv.page_size = p.problem.page_size;
  kv.rows = k.shape[0];
  return kv;
}

}  // namespace

const char* last_attention_kernel() { return last_kernel; }

Tables make_tables(const Plan::Impl& p) {
  Tables t;
  const int S = p.problem.num_seqs();
  t.cu_seqlens = p.problem.cu_seqlens;
  t.cu_seqlens_k = p.problem.kv_seqlens();
  t.block_offset.assign(S + 1, 0);
  t.first_block.assign(S, 0);
  t.kv_block_offset.assign(S + 1, 0);
  t.strided_offset.assign(S + 1, 0);
  t.chunk_offset.assign(S + 1, 0);
  for (int s = 0; s < S; ++s) {
    const std::int64_t rows = p.seq_blocks(s), nb = p.kv_blocks(s), chunks = rules::ceil_div(nb, kStage2Chunk);
    t.block_offset[s + 1] = static_cast<std::int32_t>(p.block_offset[s + 1]);
    t.first_block[s] = static_cast<std::int32_t>(p.first_block(s));
    t.kv_block_offset[s + 1] = static_cast<std::int32_t>(p.kv_block_offset[s + 1]);
    t.strided_offset[s + 1] = t.strided_offset[s] + static_cast<std::int32_t>(rules::ceil_div(p.kv_len(s), p.config.stride));
    t.chunk_offset[s + 1] = t.chunk_offset[s] + static_cast<std::int32_t>(chunks);
    t.block_seq.insert(t.block_seq.end(), rows, s);
    t.chunk_seq.insert(t.chunk_seq.end(), chunks, s);
    t.max_blocks = std::max<int>(t.max_blocks, static_cast<int>(nb));
  }
  t.total_strided = t.strided_offset[S];
  t.total_chunks = t.chunk_offset[S];
  t.total_kv_blocks = t.kv_block_offset[S];
  t.sort_size = next_pow2(std::max(t.max_blocks, 1));
  return t;
}

std::size_t carve(const Plan::Impl& p, const Tables& t, void* base, Regions* r) {
  std::size_t off = 0;
  auto take = [&](std::size_t bytes) {
    off = align256(off);
    void* ptr = base ? static_cast<char*>(base) + off : nullptr;
    off += std::max<std::size_t>(bytes, 1);
    return ptr;
  };
  const std::size_t S = p.problem.num_seqs(), H = p.problem.q_heads, rows = p.mask_rows;
  const std::size_t elem = dtype_size(p.problem.dtype);
  r->cu_seqlens = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->cu_seqlens_k = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->block_offset = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->first_block = static_cast<std::int32_t*>(take(4 * S));
  r->kv_block_offset = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->strided_offset = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->chunk_offset = static_cast<std::int32_t*>(take(4 * (S + 1)));
  r->block_seq = static_cast<std::int32_t*>(take(4 * t.block_seq.size()));
  r->chunk_seq = static_cast<std::int32_t*>(take(4 * t.chunk_seq.size()));
  r->budget = static_cast<std::int32_t*>(take(4 * S * H));
  r->kept = static_cast<std::int64_t*>(take(8 * S * H));
  r->counts = static_cast<std::int64_t*>(take(8 * (rows + 1)));
  r->row_offsets = static_cast<std::int64_t*>(take(8 * (rows + 1)));
  r->col_indices = static_cast<std::int32_t*>(take(4 * static_cast<std::size_t>(p.mask_capacity)));
  r->mass = static_cast<float*>(take(4 * H * t.total_kv_blocks));
  r->head_order = static_cast<std::int32_t*>(take(4 * H * t.total_kv_blocks));
  r->partial = static_cast<float*>(take(4 * 2 * kBlock * H * t.total_chunks));
  r->block_part = static_cast<float2*>(take(sizeof(float2) * kStage2Chunk * kBlock * H * t.total_chunks));
  r->row_lse = static_cast<float*>(take(4 * kBlock * H * S));
  r->qbar = take(elem * p.config.proxy_groups * t.total_strided * p.problem.head_dim);
  r->kbar = take(elem * p.config.proxy_groups * t.total_strided * p.problem.head_dim);
  r->sched_keys = static_cast<std::int32_t*>(take(4 * rows));
  r->sched_rows = static_cast<std::int32_t*>(take(4 * rows));
  r->sched_keys_sorted = static_cast<std::int32_t*>(take(4 * rows));
  r->sched_rows_sorted = static_cast<std::int32_t*>(take(4 * rows));
  r->scan_temp_bytes = 0;
  PROXYATTN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, r->scan_temp_bytes, r->counts, r->row_offsets,
                                                     static_cast<int>(rows + 1)));
  r->scan_temp = take(r->scan_temp_bytes);
  r->sort_temp_bytes = 0;
  PROXYATTN_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
      nullptr, r->sort_temp_bytes, r->sched_keys, r->sched_keys_sorted, r->sched_rows, r->sched_rows_sorted,
      static_cast<int>(std::max<std::size_t>(rows, 1)), 0, schedule_key_bits(p.problem.kv_heads)));
  r->sort_temp = take(r->sort_temp_bytes);
  return align256(off);
}

void check_supported(const Plan::Impl& p) {
  const int page = p.problem.page_size;
  if (page > 0 && kBlock % page != 0 && page % kBlock != 0)
    fail(ErrorCode::unsupported, "the CUDA backend takes a problem.page_size that divides 128 or is a multiple of it, "
         "got ", page);
  const int n = device_count();
  if (p.problem.device_index >= n)
    fail(ErrorCode::unsupported, "problem.device is cuda:", p.problem.device_index, " but ", n,
         " CUDA devices are visible");
  cudaDeviceProp prop{};
  PROXYATTN_CUDA_CHECK(cudaGetDeviceProperties(&prop, p.problem.device_index));
  if (prop.major < 8)
    fail(ErrorCode::unsupported, "the CUDA backend needs compute capability 8.0 or newer, cuda:",
         p.problem.device_index, " is ", prop.major, ".", prop.minor);
  if (p.problem.dtype != DType::bfloat16 && p.problem.dtype != DType::float16)
    fail(ErrorCode::unsupported, "the CUDA backend takes float16 or bfloat16, got problem.dtype ",
         dtype_name(p.problem.dtype));
  const int D = p.problem.head_dim;
  if (D != 64 && D != 128 && D != 256)
    fail(ErrorCode::unsupported, "the CUDA backend takes head_dim 64, 128 or 256, got ", D);
  if (p.config.block_size != kBlock)
    fail(ErrorCode::unsupported, "the CUDA backend takes config.block_size 128, got ", p.config.block_size);
  if (p.config.stride > 16)
    fail(ErrorCode::unsupported, "the CUDA backend takes config.stride up to 16, got ", p.config.stride);
  for (int s = 0; s < p.problem.num_seqs(); ++s)
    if (p.kv_blocks(s) > kMaxBlocks)
      fail(ErrorCode::unsupported, "sequence ", s, " has ", p.kv_len(s), " tokens; the CUDA backend takes up to ",
           static_cast<long long>(kMaxBlocks) * kBlock);
  if (p.mask_rows * 2 >= (INT64_C(1) << 31))
    fail(ErrorCode::unsupported, "the batch has ", p.mask_rows, " (query block, head) rows, too many for one launch");
}

std::size_t workspace_bytes(const Plan::Impl& p) {
  DeviceGuard guard(p.problem.device_index);
  Regions r{};
  return carve(p, make_tables(p), nullptr, &r);
}

void prepare(Plan::Impl& p, void* stream_ptr) {
  DeviceGuard guard(p.problem.device_index);
  auto st = std::make_shared<State>();
  st->tables = make_tables(p);
  carve(p, st->tables, p.workspace, &st->regions);
  const auto s = static_cast<cudaStream_t>(stream_ptr);
  const Tables& t = st->tables;
  const Regions& r = st->regions;
  auto upload = [&](void* dst, const std::vector<std::int32_t>& src) {
    if (!src.empty())
      PROXYATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice, s));
  };
  // The host vectors live in the plan's state, so the asynchronous copies may read them late.
  upload(r.cu_seqlens, t.cu_seqlens);
  upload(r.cu_seqlens_k, t.cu_seqlens_k);
  upload(r.block_offset, t.block_offset);
  upload(r.first_block, t.first_block);
  upload(r.kv_block_offset, t.kv_block_offset);
  upload(r.strided_offset, t.strided_offset);
  upload(r.chunk_offset, t.chunk_offset);
  upload(r.block_seq, t.block_seq);
  upload(r.chunk_seq, t.chunk_seq);
  p.backend_state = st;
}

Estimate estimate(Plan::Impl& p, const TensorView& q, const TensorView& k, void* stream_ptr) {
  DeviceGuard guard(p.problem.device_index);
  check_operand("q", q);
  check_operand("k", k);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  State& st = state(p);
  const Regions& r = st.regions;
  EstimateParams ep{};
  ep.q = q.data;
  ep.k = k.data;
  ep.q_tok = q.stride[0], ep.q_head = q.stride[1], ep.k_tok = k.stride[0], ep.k_head = k.stride[1];
  ep.r = r;
  ep.kv = kv_rows(p, r, k);
  ep.num_seqs = p.problem.num_seqs();
  ep.q_heads = p.problem.q_heads;
  ep.kv_heads = p.problem.kv_heads;
  ep.groups = p.config.proxy_groups;
  ep.stride = p.config.stride;
  ep.num_blocks = static_cast<int>(p.num_blocks);
  ep.num_kv_blocks = static_cast<int>(st.tables.total_kv_blocks);
  ep.total_chunks = static_cast<int>(st.tables.total_chunks);
  ep.sort_size = st.tables.sort_size;
  ep.total_strided = st.tables.total_strided;
  ep.min_blocks = rules::ceil_div(p.config.min_budget_tokens, p.config.block_size);
  ep.keep_sink = p.config.keep_sink;
  ep.budget_mode = p.config.budget_mode;
  ep.exact_last_block = p.config.exact_last_block;
  ep.head_columns = p.config.head_columns;
  ep.gamma = static_cast<float>(p.config.gamma);
  ep.scale_log2 = p.scale * kLog2e;

  const Stage1Mode stage1 = stage1_mode();
  const bool hopper = stage1 != Stage1Mode::portable && hopper_device(p);  // stage 1 + 3 on wgmma
  const int stage2 = stage2_device(p);
  dispatch(p.problem.dtype, p.problem.head_dim,
           [&]<class T, int D>() { launch_estimate_before_scan<T, D>(ep, stage2, stream); });
  PROXYATTN_CUDA_CHECK(cudaMemsetAsync(r.counts + p.mask_rows, 0, sizeof(std::int64_t), stream));
  std::size_t scan_bytes = r.scan_temp_bytes;
  PROXYATTN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(r.scan_temp, scan_bytes, r.counts, r.row_offsets,
                                                     static_cast<int>(p.mask_rows + 1), stream));
  dispatch(p.problem.dtype, p.problem.head_dim,
           [&]<class T, int D>() {
             launch_estimate_after_scan<T, D>(ep, hopper ? p.problem.device_index : -1,
                                              stage1 == Stage1Mode::hopper, stage1_split(), stream);
           });

  Estimate e;
  e.device = Device::cuda;
  e.mask.block_size = p.config.block_size;
  e.mask.num_heads = p.problem.q_heads;
  e.mask.num_rows = p.mask_rows;
  e.mask.device = Device::cuda;
  e.mask.device_index = p.problem.device_index;
  e.mask.row_offsets = r.row_offsets;
  e.mask.col_indices = r.col_indices;
  e.budget_blocks = r.budget;
  e.kept_blocks = r.kept;
  return e;
}

void attention(Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView& v, const BlockMask* mask,
               const TensorView& out, const TensorView& lse, void* stream_ptr) {
  DeviceGuard guard(p.problem.device_index);
  check_operand("q", q);
  check_operand("k", k);
  check_operand("v", v);
  check_operand("out", out);
  if (p.mask_rows == 0) return;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  State& st = state(p);
  const Regions& r = st.regions;
  const int rows = static_cast<int>(p.mask_rows);

  // Longest rows first (with kv_order, kv head by kv head, every other one shortest first): the
  // hardware starts CTAs roughly in index order, and the persistent kernel deals the list out in
  // snake order, so a sort by the work per row balances the CTAs' totals. kv head by kv head only
  // where each kv head's rows fill a round of the persistent grid: with fewer, every round
  // straddles kv heads whichever way the rows go (in a model of the deal the busiest CTA has
  // 1.78x the mean work at 4K, Llama shapes, against 1.00x in length order; measured, 4K dense
  // 0.375 -> 0.228 ms, and Gemma-2-9B at 8K 1.18 -> 0.74 ms).
  const int grid = persistent_grid(p);
  const bool by_kv = kv_major(p.problem.kv_heads) && rows / p.problem.kv_heads >= grid;
  schedule_keys_kernel<<<(rows + 255) / 256, 256, 0, stream>>>(
      mask ? mask->row_offsets : nullptr, r.block_seq, r.block_offset, r.first_block, p.problem.q_heads, p.gqa_ratio(),
      p.problem.kv_heads, by_kv, rows, r.sched_keys, r.sched_rows);
  PROXYATTN_LAUNCH_CHECK("schedule_keys_kernel");
  std::size_t sort_bytes = r.sort_temp_bytes;
  PROXYATTN_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(r.sort_temp, sort_bytes, r.sched_keys,
                                                                 r.sched_keys_sorted, r.sched_rows, r.sched_rows_sorted,
                                                                 rows, 0, schedule_key_bits(p.problem.kv_heads), stream));
  AttentionParams ap{};
  ap.q = q.data;
  ap.k = k.data;
  ap.v = v.data;
  ap.o = out.data;
  ap.lse = lse.defined() ? lse.as<float>() : nullptr;
  ap.q_tok = q.stride[0], ap.q_head = q.stride[1];
  ap.k_tok = k.stride[0], ap.k_head = k.stride[1];
  ap.v_tok = v.stride[0], ap.v_head = v.stride[1];
  ap.o_tok = out.stride[0], ap.o_head = out.stride[1];
  ap.row_offsets = mask ? mask->row_offsets : nullptr;
  ap.col_indices = mask ? mask->col_indices : nullptr;
  ap.schedule = r.sched_rows_sorted;
  ap.block_seq = r.block_seq;
  ap.block_offset = r.block_offset;
  ap.first_block = r.first_block;
  ap.cu_seqlens = r.cu_seqlens;
  ap.kv = kv_rows(p, r, k);
  ap.total_tokens = p.problem.total_tokens();
  ap.total_kv_tokens = k.shape[0];
  ap.q_heads = p.problem.q_heads;
  ap.gqa_ratio = p.gqa_ratio();
  ap.num_rows = rows;
  ap.scale_log2 = p.scale * kLog2e;
  ap.l2_hints = l2_hints() ? 1 : 0;
  ap.l2_pin_keys = l2_pin_keys(p, p.problem.head_dim * static_cast<int>(dtype_size(p.problem.dtype)), by_kv);
  launch_attention(p, ap, grid, stream);
}

}  // namespace proxyattn::detail::cuda
