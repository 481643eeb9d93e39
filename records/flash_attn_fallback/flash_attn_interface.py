"""Stand-in for FlashAttention 3's `flash_attn_interface` module, for machines where FA3 is not installed.

records/bench.py puts this folder on a peer script's PYTHONPATH only when the script imports
`flash_attn_interface` and the real module cannot be found; the benchmark table says so, because torch's
scaled_dot_product_attention is slower than FA3 on Hopper, so that row's speed is not the script's best.
"""
import torch.nn.functional as F
from torch import Tensor


def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, softmax_scale: float | None = None, causal: bool = False) -> Tensor:
    """FA3's call on FA3's layout, [batch, seq, heads, head_dim]; k and v may have fewer (grouped) heads.

    SDPA wants [batch, heads, seq, head_dim], so transpose in and out; the output keeps FA's layout.
    """
    grouped = q.size(2) != k.size(2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal, scale=softmax_scale, enable_gqa=grouped)
    return y.transpose(1, 2)
