"""Multi-head self-attention shared by both backbones.

One module so that every PETL method that touches attention (prefix, LoRA, SSF, BitFit) is
written once: both backbones expose `q_proj`, `k_proj`, `v_proj`, `out_proj` and a `kv_prefix`
slot. Attention runs through `scaled_dot_product_attention` so a GPU gets the fused kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicpetl.errors import InputError


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position table as wav2vec2-conformer builds it (one cos/sin per head channel)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        # persistent: the official MusicFM checkpoint stores it (`conformer.embed_positions.inv_freq`)
        self.register_buffer("inv_freq", inv_freq, persistent=True)

    def forward(self, seq_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(seq_len, device=device or self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.float())
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, head_dim)
        return emb.cos(), emb.sin()


class MultiHeadAttention(nn.Module):
    """Self-attention with q/k/v/out projections.

    `rotary_on_input`: wav2vec2-conformer (and so MusicFM) rotates the layer *input* per head
    before the q/k projections, not q and k after them; we reproduce that exactly.
    `kv_prefix`: a module returning (k, v) of shape (P, d) (or (B, P, d)) prepended after the
    projections, used by prefix-tuning; None for every other method.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise InputError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_prefix: nn.Module | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, t, d = x.shape
        qk_in = x
        if rotary is not None:
            cos, sin = rotary
            xh = x.view(b, t, self.num_heads, self.head_dim)
            cos, sin = cos[:t, None, :].to(x.dtype), sin[:t, None, :].to(x.dtype)
            qk_in = (xh * cos + rotate_half(xh) * sin).reshape(b, t, d)
        q = self._heads(self.q_proj(qk_in))
        k = self._heads(self.k_proj(qk_in))
        v = self._heads(self.v_proj(x))
        if self.kv_prefix is not None:
            pk, pv = self.kv_prefix()
            if pk.dim() == 2:
                pk, pv = pk.expand(b, -1, -1), pv.expand(b, -1, -1)
            k = torch.cat([self._heads(pk.to(k.dtype)), k], dim=2)
            v = torch.cat([self._heads(pv.to(v.dtype)), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))
