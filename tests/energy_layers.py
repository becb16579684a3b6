"""A random cross-attention layer in float64 for the energy tests (no model): queries, context, W_k."""
import math

import torch


def random_layer(B=2, H=4, P=16, N=7, d=8, D=12, seed=0):
    """``(q (B, H, P, d), c (B, N, D), w_k (H*d, D), beta = 1/sqrt(d), H)``, float64, seeded."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, P, d, generator=g, dtype=torch.float64)
    c = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    w_k = torch.randn(H * d, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    return q, c, w_k, 1 / math.sqrt(d), H
