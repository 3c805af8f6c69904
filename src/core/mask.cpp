#include "proxyattn/mask.hpp"

#include "core/check.hpp"

namespace proxyattn {

BlockMask HostBlockMask::view() const {
  BlockMask m;
  m.block_size = block_size;
  m.num_heads = num_heads;
  m.num_rows = num_rows();
  m.device = Device::cpu;
  m.row_offsets = row_offsets.data();
  m.col_indices = col_indices.data();
  m.num_entries = static_cast<std::int64_t>(col_indices.size());
  return m;
}

void HostBlockMask::add_row(const std::vector<std::int32_t>& blocks) {
  for (std::size_t i = 1; i < blocks.size(); ++i)
    if (blocks[i] <= blocks[i - 1])
      detail::invalid("HostBlockMask::add_row: blocks must be strictly ascending, got ", blocks[i - 1],
                      " then ", blocks[i], " in row ", num_rows());
  col_indices.insert(col_indices.end(), blocks.begin(), blocks.end());
  row_offsets.push_back(static_cast<std::int64_t>(col_indices.size()));
}

}  // namespace proxyattn
