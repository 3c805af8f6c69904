// The CUDA backend behind the seam of core/backends.hpp: support checks, the workspace, and the
// launch sequences of estimate and attention (no allocation, no synchronisation).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>

#include "core/backends.hpp"
#include "core/rules.hpp"
#include "cuda/attention.hpp"
#include "cuda/dispatch.cuh"
#include "cuda/estimate.cuh"
#include "cuda/kernels.hpp"
#include "cuda/layout.hpp"
#include "cuda/runtime.hpp"

namespace proxyattn::detail::cuda {
namespace {

constexpr int kWorkBits = 14;  // row lengths are at most kMaxBlocks = 8192 < 2^14

constexpr int kMaxKvMajorHeads = 1024;  // kv head numbers above the work bits: 24-bit keys at most

// The order of the attention schedule: kv heads one after the other, so that the CTAs running at
// one time read the K/V of one kv head and L2 serves most of their tiles (with every head at
// once, a sparse mask's tiles are spread over all of K and V, far more than L2 holds). Within a
// kv head the rows go longest first, or shortest first in every other kv head (the last one
// longest first, so that the schedule ends on short rows): the persistent kernel deals the list
// out in rounds, one item per CTA, and its snake order balances the CTAs' totals only over a
// list that is sorted; with every kv head longest first, a round that straddles two kv heads
// pairs the shortest rows of one with the longest of the next, and the same CTAs take the long
// ones twice (at 16K, Llama shapes, the busiest CTA had 24% more work than the mean; zigzag:
// 0.1%). Where the sort keys cannot hold the kv head (more than 1024), or a kv head's rows fill
// less than a round of the grid (attention()), longest rows first over all heads.
bool kv_major(int kv_heads) { return kv_heads <= kMaxKvMajorHeads; }

// Bits of a schedule sort key: the work of a row, and above it the kv head when kv_major.
int schedule_key_bits(int kv_heads) {
  int bits = kWorkBits;
  while (kv_major(kv_heads) && (1 << (bits - kWorkBits)) < kv_heads) ++bits;
  return bits;
}

struct State {
  Tables tables;
  Regions regions;
  Kernels kernels;
};

State& state(const Plan::Impl& p) { return *static_cast<State*>(p.backend_state.get()); }

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
// first (kv_major), the complement of the work.
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

// Copies each sequence's keys and values out of their pages into the packed [tokens, kv heads, D]
// layout of cu_seqlens_k (Kernels::pack_pages): a warp per token, 16 bytes per lane and load. Keys
// of a page outside the cache (a bad table entry) are written as zeros, as the in-place reads give.
__global__ void pack_pages_kernel(KvRows kv, int num_seqs, const char* k, const char* v, std::int64_t k_tok,
                                  std::int64_t k_head, std::int64_t v_tok, std::int64_t v_head, int elem, int kv_heads,
                                  int row_chunks, std::int64_t tokens, uint4* k_out, uint4* v_out) {
  const std::int64_t token = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (token >= tokens) return;
  int lo = 0, hi = num_seqs - 1;  // the sequence s with cu_seqlens_k[s] <= token < cu_seqlens_k[s + 1]
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (__ldg(kv.cu_seqlens_k + mid) <= token) lo = mid;
    else hi = mid - 1;
  }
  const std::int64_t row = kv.row(lo, static_cast<int>(token - __ldg(kv.cu_seqlens_k + lo)));
  const int head_chunks = row_chunks / kv_heads;  // 16-byte chunks of one head's D elements
  for (int c = lane; c < row_chunks; c += 32) {
    const int h = c / head_chunks, off = c % head_chunks;
    uint4 kc = make_uint4(0, 0, 0, 0), vc = kc;
    if (row >= 0) {
      kc = __ldg(reinterpret_cast<const uint4*>(k + (row * k_tok + h * k_head) * elem) + off);
      vc = __ldg(reinterpret_cast<const uint4*>(v + (row * v_tok + h * v_head) * elem) + off);
    }
    k_out[token * row_chunks + c] = kc;
    v_out[token * row_chunks + c] = vc;
  }
}

// Launches the sparse attention of ap on the plan's kernel.
void launch_attention(const Plan::Impl& p, const Kernels& k, const AttentionParams& ap, cudaStream_t stream) {
  dispatch(p.problem.dtype, p.problem.head_dim, [&]<class T, int D>() {
    if (k.attention == Arch::sm90) {
      sm90::TileMaps maps;
      sm90::make_tile_maps(ap, Elem<T>::is_bf16, D, p.problem.kv_heads, &maps);
      sm90::launch_sparse_attention_sm90<T, D>(ap, maps, k.grid, stream);
    } else {
      launch_sparse_attention<T, D>(ap, stream);
    }
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

const Kernels& plan_kernels(const Plan& plan) {
  const Plan::Impl& p = plan.impl();
  if (p.backend != Backend::cuda || !p.backend_state)
    fail(ErrorCode::invalid_argument, "plan_kernels: the plan is not a CUDA plan");
  return state(p).kernels;
}

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

std::size_t carve(const Plan::Impl& p, const Tables& t, const Kernels& k, void* base, Regions* r) {
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
  const std::size_t packed = k.pack_pages ? elem * t.cu_seqlens_k.back() * p.problem.kv_heads * p.problem.head_dim : 0;
  r->k_packed = take(packed);
  r->v_packed = take(packed);
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
  if (!in_kernel_table(p.problem.dtype, p.problem.head_dim))
    fail(ErrorCode::unsupported, "the CUDA backend takes problem.dtype ", PROXYATTN_CUDA_DTYPES_TEXT,
         " and problem.head_dim ", PROXYATTN_CUDA_HEAD_DIMS_TEXT, ", got ", dtype_name(p.problem.dtype), " and ",
         p.problem.head_dim);
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
  const Tables t = make_tables(p);
  return carve(p, t, choose_kernels(p, t, kernel_request()), nullptr, &r);
}

void prepare(Plan::Impl& p, void* stream_ptr) {
  DeviceGuard guard(p.problem.device_index);
  auto st = std::make_shared<State>();
  st->tables = make_tables(p);
  st->kernels = choose_kernels(p, st->tables, kernel_request());
  carve(p, st->tables, st->kernels, p.workspace, &st->regions);
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
  ep.last_gamma = static_cast<float>(rules::last_block_cut(p.config.gamma, p.config.last_block_gamma));
  ep.scale_log2 = p.scale * kLog2e;

  dispatch(p.problem.dtype, p.problem.head_dim,
           [&]<class T, int D>() { launch_estimate_before_scan<T, D>(ep, st.kernels, stream); });
  PROXYATTN_CUDA_CHECK(cudaMemsetAsync(r.counts + p.mask_rows, 0, sizeof(std::int64_t), stream));
  std::size_t scan_bytes = r.scan_temp_bytes;
  PROXYATTN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(r.scan_temp, scan_bytes, r.counts, r.row_offsets,
                                                     static_cast<int>(p.mask_rows + 1), stream));
  dispatch(p.problem.dtype, p.problem.head_dim,
           [&]<class T, int D>() { launch_estimate_after_scan<T, D>(ep, st.kernels, stream); });

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

  // Longest rows first (kv head by kv head, every other one shortest first: kv_major): the
  // hardware starts CTAs roughly in index order, and the persistent kernel deals the list out in
  // snake order, so a sort by the work per row balances the CTAs' totals. kv head by kv head only
  // where each kv head's rows fill a round of the persistent grid: with fewer, every round
  // straddles kv heads whichever way the rows go (in a model of the deal the busiest CTA has
  // 1.78x the mean work at 4K, Llama shapes, against 1.00x in length order; measured, 4K dense
  // 0.375 -> 0.228 ms, and Gemma-2-9B at 8K 1.18 -> 0.74 ms).
  const int grid = st.kernels.grid;  // 0 on sm80: the hardware deals the items
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
  if (st.kernels.pack_pages) {
    const std::int64_t tokens = st.tables.cu_seqlens_k.back();
    const int elem = static_cast<int>(dtype_size(p.problem.dtype));
    const int row_chunks = p.problem.kv_heads * p.problem.head_dim * elem / 16;
    if (tokens > 0) {
      constexpr int kWarps = 8;
      pack_pages_kernel<<<static_cast<unsigned>((tokens + kWarps - 1) / kWarps), 32 * kWarps, 0, stream>>>(
          ap.kv, p.problem.num_seqs(), static_cast<const char*>(k.data), static_cast<const char*>(v.data), ap.k_tok,
          ap.k_head, ap.v_tok, ap.v_head, elem, p.problem.kv_heads, row_chunks, tokens, static_cast<uint4*>(r.k_packed),
          static_cast<uint4*>(r.v_packed));
      PROXYATTN_LAUNCH_CHECK("pack_pages_kernel");
    }
    ap.k = r.k_packed;
    ap.v = r.v_packed;
    ap.k_tok = ap.v_tok = static_cast<std::int64_t>(p.problem.kv_heads) * p.problem.head_dim;
    ap.k_head = ap.v_head = p.problem.head_dim;
    ap.kv.table = nullptr;
    ap.kv.rows = ap.total_kv_tokens = tokens;
  }
  launch_attention(p, st.kernels, ap, stream);
}

}  // namespace proxyattn::detail::cuda
