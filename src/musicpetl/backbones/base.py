"""What every backbone exposes, so that PETL methods, tasks and the trainer never look inside one.

A backbone is `embed` (everything before the first transformer layer: the frozen front end for
every method but full fine-tuning) followed by `layers`. The PETL-facing surface is two
Protocols, checked for every registered backbone by `check_petl_surface` (tests/test_backbone_protocol.py):

`PetlLayer`, each of `backbone.layers`:
- `attn`: a `MultiHeadAttention` (q_proj, k_proj, v_proj, out_proj, kv_prefix slot): prefix tuning;
- `linears()`: role -> every linear map of the layer (attention projections, FFN in/out, and
  conformers' kernel-1 pointwise convolutions), each at the sub-module path `role`: LoRA (and the
  other peft tuners), SSF and BitFit;
- `adapter_sites()`: name -> sub-module whose (B, T, d) output an adapter transforms;
- `norms()`: the layer's own LayerNorms (adapter trains them, BitFit their biases);
- `bitfit_extras()`: further bias vectors BitFit trains (MusicFM/MuQ: the conv module's BatchNorm bias).

`PetlBackbone`, the model: `hidden_size`, `layers`, the `input_prompt` slot (prompt tuning),
`frontend_modules()` (what runs without autograd unless it trains) and `forward(wave, num_layers)`.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from musicpetl.errors import InputError

from .attention import MultiHeadAttention


@runtime_checkable
class PetlLayer(Protocol):
    """One transformer/conformer layer as every PETL method sees it (and nothing more)."""

    attn: MultiHeadAttention

    def linears(self) -> dict[str, nn.Module]: ...

    def adapter_sites(self) -> dict[str, nn.Module]: ...

    def norms(self) -> dict[str, nn.LayerNorm]: ...

    def bitfit_extras(self) -> dict[str, nn.Parameter]: ...


@runtime_checkable
class PetlBackbone(Protocol):
    """A backbone as methods, the model head and the trainer see it."""

    hidden_size: int
    layers: nn.ModuleList
    input_prompt: nn.Module | None

    def frontend_modules(self) -> list[nn.Module]: ...

    def frontend_trainable(self) -> bool: ...

    def forward(self, wave: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]: ...


class Backbone(nn.Module):
    """Base of our implementations. `build_backbone` sets `name`, `frame_rate` and
    `default_segment_seconds` from the registry's spec (the one place they are stated)."""

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
        """Hook for a norm that follows only the very last of all the model's layers (MusicFM, MuQ,
        pre-LN MERT)."""
        return x

    def n_frames(self, n_samples: int) -> int:
        """Frames the layers see for `n_samples` of audio."""
        raise NotImplementedError

    def truncate(self, num_layers: int) -> None:
        """Keep only the first `num_layers` layers: layers never used are never built or trained."""
        n = self.check_num_layers(num_layers)
        del self.layers[n:]

    # -- shared ---------------------------------------------------------------------------------
    def check_num_layers(self, num_layers: int | None) -> int:
        n = len(self.layers) if num_layers is None else int(num_layers)
        if not 1 <= n <= len(self.layers):
            raise InputError(f"{self.name}: num_layers must be in 1..{len(self.layers)}, got {num_layers}")
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


# -- the checked surface --------------------------------------------------------------------------

def _is_linear_map(m: nn.Module) -> bool:
    """What SSF, LoRA and the peft tuners can wrap: a Linear, or a kernel-1 Conv1d (a pointwise map)."""
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv1d) and m.kernel_size == (1,) and m.groups == 1)


def check_petl_surface(backbone: nn.Module) -> list[str]:
    """Every way `backbone` breaks the PETL-facing contract, as messages (empty: it fits).

    Beyond the Protocols' names this checks what the methods rely on: `attn` is a
    MultiHeadAttention with an empty kv_prefix slot; every `linears()` role is the sub-module path
    of a Linear or kernel-1 Conv1d with the hidden size on one side, none listed twice; adapter
    sites are parameterised sub-modules; norms are affine LayerNorms over the hidden size with a
    bias; BitFit extras are the layer's own parameters; the front end and the layers share no
    parameter.
    """
    problems: list[str] = []
    if not isinstance(backbone, PetlBackbone):
        missing = [n for n in ("hidden_size", "layers", "input_prompt", "frontend_modules", "frontend_trainable")
                   if not hasattr(backbone, n)]
        return [f"not a PetlBackbone (missing {missing})"]
    d = backbone.hidden_size
    if not isinstance(backbone.layers, nn.ModuleList) or not len(backbone.layers):
        problems.append("layers must be a non-empty nn.ModuleList")
    if backbone.input_prompt is not None:
        problems.append("input_prompt slot must start empty (None)")
    for i, layer in enumerate(backbone.layers):
        where = f"layer {i} ({type(layer).__name__})"
        if not isinstance(layer, PetlLayer):
            problems.append(f"{where}: not a PetlLayer (needs attn, linears, adapter_sites, norms, bitfit_extras)")
            continue
        subs = {id(m) for m in layer.modules()}
        own = {id(p) for p in layer.parameters()}
        if not isinstance(layer.attn, MultiHeadAttention) or id(layer.attn) not in subs:
            problems.append(f"{where}: attn must be a MultiHeadAttention sub-module")
        elif layer.attn.kv_prefix is not None or layer.attn.dim != d:
            problems.append(f"{where}: attn must be {d}-d with an empty kv_prefix slot")
        linears = layer.linears()
        seen: set[int] = set()
        for role, m in linears.items():
            try:
                at_path = layer.get_submodule(role)
            except AttributeError:
                at_path = None
            if at_path is not m:
                problems.append(f"{where}: linears() role {role!r} is not the sub-module path of its map")
            if not _is_linear_map(m):
                problems.append(f"{where}: linears()[{role!r}] is a {type(m).__name__}, not a Linear or kernel-1 Conv1d")
                continue
            shape = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
            if d not in shape:
                problems.append(f"{where}: linears()[{role!r}] maps {shape[0]} -> {shape[1]}, neither side is {d}")
            if id(m) in seen:
                problems.append(f"{where}: linears() lists one map twice ({role!r})")
            seen.add(id(m))
        a = layer.attn
        if {id(a.q_proj), id(a.k_proj), id(a.v_proj), id(a.out_proj)} - seen:
            problems.append(f"{where}: linears() must include the attention's q/k/v/out projections")
        sites = layer.adapter_sites()
        if not sites:
            problems.append(f"{where}: adapter_sites() is empty")
        for name, site in sites.items():
            if id(site) not in subs or not any(True for _ in site.parameters()):
                problems.append(f"{where}: adapter site {name!r} must be a sub-module with parameters")
        for name, norm in layer.norms().items():
            if not (isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
                    and tuple(norm.normalized_shape) == (d,) and id(norm) in subs):
                problems.append(f"{where}: norm {name!r} must be the layer's own affine LayerNorm({d}) with a bias")
        for name, p in layer.bitfit_extras().items():
            if not isinstance(p, nn.Parameter) or id(p) not in own:
                problems.append(f"{where}: bitfit extra {name!r} must be one of the layer's parameters")
    front = {id(p) for m in backbone.frontend_modules() for p in m.parameters()}
    if front & {id(p) for p in backbone.layers.parameters()}:
        problems.append("frontend_modules() and layers share parameters")
    return problems
