// The block-sparse mask in CSR form: for each (query block, head), the kept key blocks.
#pragma once

#include <cstdint>
#include <vector>

#include "proxyattn/tensor.hpp"

namespace proxyattn {

// Rows are ordered query block major, head minor: row = global_block * num_heads + head, where
// global_block = (rows of the earlier sequences of the batch) + (m - first), m the row's block
// index in its sequence and first the block of the sequence's first query (0 for a whole
// prompt; (kv_len - q_len) / block_size when the queries are the last of more keys).
// Row r keeps the key blocks col_indices[row_offsets[r] .. row_offsets[r+1]), indices local to
// the row's sequence, strictly ascending, each at most the row's own block index m (causal).
// A non-owning view; the pointers live on `device`.
struct BlockMask {
  int block_size = 0;
  int num_heads = 0;
  std::int64_t num_rows = 0;
  Device device = Device::cpu;
  int device_index = 0;
  const std::int64_t* row_offsets = nullptr;  // [num_rows + 1]
  const std::int32_t* col_indices = nullptr;  // [row_offsets[num_rows]]
  // How many entries col_indices holds. When given (>= 0), the call checks that row_offsets does
  // not count more (on CUDA a read-back of one value, skipped while a CUDA graph is captured);
  // -1 leaves that to the caller.
  std::int64_t num_entries = -1;
};

// An owning host copy, for building masks by hand and for reading results back.
struct HostBlockMask {
  int block_size = 0;
  int num_heads = 0;
  std::vector<std::int64_t> row_offsets{0};
  std::vector<std::int32_t> col_indices;

  std::int64_t num_rows() const { return static_cast<std::int64_t>(row_offsets.size()) - 1; }
  std::int64_t nnz() const { return row_offsets.back(); }
  BlockMask view() const;
  // Appends one row; `blocks` must be ascending.
  void add_row(const std::vector<std::int32_t>& blocks);
};

}  // namespace proxyattn
