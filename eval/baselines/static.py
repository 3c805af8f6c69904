"""Static selector: attention sink + local window, the same for every head and input."""
import torch

from . import common


def static_mask(n_tokens, q_heads, window_blocks, *, sink_blocks=1, block_size=128, device="cpu"):
    """Block mask [q_heads, Nb, Nb] bool: row m keeps key blocks n <= m with n < sink_blocks
    (the sink) or n > m - window_blocks (the window, which includes the diagonal)."""
    for name, value, low in (("n_tokens", n_tokens, 1), ("q_heads", q_heads, 1),
                             ("window_blocks", window_blocks, 1), ("sink_blocks", sink_blocks, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    common.check_block_size(block_size)
    nb = common.ceil_div(n_tokens, block_size)
    m = torch.arange(nb, device=device)[:, None]
    n = torch.arange(nb, device=device)[None, :]
    keep = (n <= m) & ((n < sink_blocks) | (n > m - window_blocks))
    return keep.expand(q_heads, nb, nb).contiguous()
