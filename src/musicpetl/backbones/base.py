"""What every backbone exposes, so that PETL methods, tasks and the trainer never look inside one.

A backbone is `embed` (everything before the first transformer layer: the frozen front end for
every method but full fine-tuning) followed by `layers`. Each layer offers the same PETL-facing
surface in both backbones:

- `attn`: a `MultiHeadAttention` (q_proj, k_proj, v_proj, out_proj, kv_prefix slot);
- `linears()`: role -> every linear map of the layer (attention projections, FFN in/out, and
  MusicFM's kernel-1 pointwise convolutions), the targets of LoRA and SSF;
- `adapter_sites()`: name -> sub-module whose output an adapter transforms;
- `norms()`: the layer's own LayerNorms (adapter trains them, BitFit their biases);
- `bitfit_extras()`: further bias vectors BitFit trains (MusicFM's conv module).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class Backbone(nn.Module):
    name: str = "backbone"
    sample_rate: int = 24000
    hidden_size: int
    frame_rate: float
    default_segment_seconds: float = 5.0
    layers: nn.ModuleList

    def __init__(self):
        super().__init__()
        # slot for prompt-tuning: a module mapping (B, T, d) -> (B, P + T, d); `prompt_length` is P
        self.input_prompt: nn.Module | None = None

    # -- to implement ---------------------------------------------------------------------------
    def embed(self, wave: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, T, d)
        raise NotImplementedError

    def frontend_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def layer_context(self, x: torch.Tensor) -> dict:
        """Per-forward extras that every layer needs (e.g. a rotary table)."""
        return {}

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """Hook for a norm that follows only the very last of all the model's layers (MusicFM)."""
        return x

    def truncate(self, num_layers: int) -> None:
        """Keep only the first `num_layers` layers: layers never used are never built or trained."""
        n = self.check_num_layers(num_layers)
        del self.layers[n:]

    # -- shared ---------------------------------------------------------------------------------
    def check_num_layers(self, num_layers: int | None) -> int:
        n = len(self.layers) if num_layers is None else int(num_layers)
        if not 1 <= n <= len(self.layers):
            raise ValueError(f"{self.name}: num_layers must be in 1..{len(self.layers)}, got {num_layers}")
        return n

    def frontend_trainable(self) -> bool:
        return any(p.requires_grad for m in self.frontend_modules() for p in m.parameters())

    def forward(self, wave: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]:
        """Hidden states after each of the first `num_layers` layers, each (B, T, d).

        The front end runs without autograd unless one of its parameters trains: PETL methods
        then never differentiate (nor store activations for) the frozen CNN / mel front end.
        """
        n = self.check_num_layers(num_layers)
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frontend_trainable()):
            x = self.embed(wave)
        return self.encode(x, n)

    def encode(self, x: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
        """The part after `embed`: prompt tokens, the first `num_layers` layers, prompt removed."""
        n_prompt = 0
        if self.input_prompt is not None:
            t = x.shape[1]
            x = self.input_prompt(x)
            n_prompt = x.shape[1] - t
        ctx = self.layer_context(x)
        hidden = []
        for i in range(num_layers):
            x = self.layers[i](x, **ctx)
            h = self.finalize(x) if i + 1 == self.cfg.num_layers else x
            hidden.append(h[:, n_prompt:])  # prompt tokens never reach pooling
        return hidden

    def segment_length(self, seconds: float | None = None) -> int:
        return int(round((seconds or self.default_segment_seconds) * self.sample_rate))

    @torch.no_grad()
    def features(self, wave: torch.Tensor, num_layers: int | None = None, segment_seconds: float | None = None,
                 batch_size: int = 8, pool: bool = True) -> torch.Tensor:
        """Whole-track inference in bounded memory: fixed segments, batched.

        Returns (S, L, d) time-pooled features per segment and layer (pool=True), or a list of
        per-segment (L, T, d) tensors otherwise.
        """
        from musicpetl.audio import segment_starts

        wave = wave.reshape(-1)
        seg = min(self.segment_length(segment_seconds), wave.numel())  # a short track is one segment
        starts = segment_starts(wave.numel(), seg)
        out = []
        dev = next(self.parameters()).device
        for b in range(0, len(starts), batch_size):
            chunk = torch.stack([wave[s:s + seg] for s in starts[b:b + batch_size]]).to(dev)
            hs = torch.stack(self(chunk, num_layers), dim=1)  # (B, L, T, d); via __call__ so hooks run
            out.append(hs.mean(dim=2).float().cpu() if pool else hs.float().cpu())
        res = torch.cat(out)
        return res if pool else list(res)


def init_linear_like_hf(module: nn.Module, std: float = 0.02) -> None:
    """Random init in the style of the reference models (normal(0, 0.02), zero bias, unit norms)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)) and not hasattr(m, "parametrizations"):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                k = math.sqrt(m.groups / (m.in_channels * math.prod(m.kernel_size)))
                nn.init.uniform_(m.bias, -k, k)
