"""Backbone + PETL method + time-mean pooling + the paper's MLP head.

What the head reads of the used layers is an option (`train.layer_input`): the last used layer
(the paper), the mean of the used layers, or a learned softmax-weighted sum of them (as the MIR
benchmarks, e.g. MARBLE, offer for probing). The same `Head` serves probing on cached features
and every method with the backbone in the loop.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from musicpetl.backbones.base import Backbone

LAYER_INPUTS = ("last", "mean", "weighted")


class Head(nn.Module):
    """[layer mix ->] Linear(d, d) -> Dropout(0.5) -> ReLU -> Linear(d, n_out), as the paper and its code.

    Input: (B, d) pooled features of the last used layer (`layer_input="last"`), or (B, L, d) of
    every used layer, mixed by their mean or by softmax(`layer_weights`) (zeros at start: the mean).
    """

    def __init__(self, dim: int, n_out: int, dropout: float = 0.5, layer_input: str = "last", num_layers: int = 1):
        super().__init__()
        if layer_input not in LAYER_INPUTS:
            raise ValueError(f"layer_input must be one of {LAYER_INPUTS}, got {layer_input!r}")
        self.layer_input = layer_input
        if layer_input == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        elif layer_input == "mean":
            # no parameters, but the run file must say so: a reader building a last-layer head fails on
            # this unexpected tensor instead of silently reading only the last layer
            self.register_buffer("mean_of_layers", torch.tensor(num_layers))
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, n_out))

    single_layer_dims = 2  # (B, d): one layer's pooled features; (B, L, d): every used layer

    def mix(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mix the layer axis (dim 1) away, as `layer_input` says; input of one layer passes as is."""
        if pooled.dim() == self.single_layer_dims:
            return pooled
        if pooled.dim() != self.single_layer_dims + 1:
            raise ValueError(f"{type(self).__name__} takes {self.single_layer_dims}-d input or {self.single_layer_dims + 1}-d "
                             f"with a layer axis, got {tuple(pooled.shape)}")
        if self.layer_input == "last":
            return pooled[:, -1]
        if self.layer_input == "mean":
            return pooled.mean(dim=1)
        w = torch.softmax(self.layer_weights.float(), dim=0).to(pooled.dtype)
        return (pooled * w.view(1, -1, *([1] * (pooled.dim() - 2)))).sum(dim=1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(self.mix(pooled))


class PetlModel(nn.Module):
    """Predicts from the time-mean of the used layers, mixed as `layer_input` says (default: the last).

    `frame_level` (beat tracking): no time-mean; the head (frame_head.FrameHead) predicts every
    frame of the used layers' hidden states, (B, T) logits for one output per frame."""

    def __init__(self, backbone: Backbone, n_out: int, num_layers: int, method: str = "finetune",
                 head_dropout: float = 0.5, layer_input: str = "last", frame_level: bool = False):
        super().__init__()
        self.backbone, self.num_layers, self.method = backbone, num_layers, method
        self.frame_level = bool(frame_level)
        if self.frame_level:
            from musicpetl.frame_head import FrameHead  # frame_head builds on Head (this module)

            self.head = FrameHead(backbone.hidden_size, n_out, head_dropout, layer_input, num_layers)
        else:
            self.head = Head(backbone.hidden_size, n_out, head_dropout, layer_input, num_layers)

    @property
    def layer_input(self) -> str:
        return self.head.layer_input

    def pool(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Time-mean of the used layers' hidden states: (B, d) of the last, or (B, L, d) of all.
        Frame-level: no pooling, (B, T, d) of the last or (B, L, T, d) of all."""
        if self.frame_level:
            from musicpetl.frame_head import stack_layers

            return stack_layers(hidden, self.head.layer_input)
        if self.head.layer_input == "last":
            return hidden[-1].mean(dim=1)
        return torch.stack([h.mean(dim=1) for h in hidden], dim=1)

    def pooled(self, wave: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(wave, self.num_layers))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(wave))

    def forward_embedded(self, x: torch.Tensor) -> torch.Tensor:
        """From the front end's output (B, T, d), as the cached front end stores it (eval mode).

        The dropout that closes both backbones' `embed` is applied here (a no-op in eval mode), so
        training on cached frames keeps it; MERT's inner dropout after its feature projection
        cannot be replayed on cached frames (README "Training at scale")."""
        drop = getattr(self.backbone, "dropout", None)
        if isinstance(drop, nn.Dropout):
            x = drop(x)
        return self.head(self.pool(self.backbone.encode(x, self.num_layers)))

    def train(self, mode: bool = True):
        """BatchNorm whose scale is frozen keeps its running statistics (a frozen backbone stays
        bit-identical; BitFit trains MusicFM's BatchNorm bias but not its statistics)."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _updates_statistics(m):
                    m.eval()
        return self

    def trained_buffer_names(self) -> set[str]:
        """Buffers that training changes: the running statistics of BatchNorm whose scale trains."""
        return {f"{prefix}.{b}" if prefix else b
                for prefix, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and _updates_statistics(m) for b, _ in m.named_buffers(recurse=False)}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def _updates_statistics(bn: nn.Module) -> bool:
    return bn.weight is not None and bn.weight.requires_grad


# -- activation checkpointing ------------------------------------------------------------------

def _recompute_guard(module: nn.Module):
    """checkpoint's context_fn: nothing around the forward; around the recomputation in backward,
    BatchNorm in training mode must not update its running statistics a second time (momentum 0
    leaves them bit-identical; the batch counter is put back)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.training and m.track_running_stats]

    @contextlib.contextmanager
    def recompute():
        saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in bns]
        for m in bns:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum, count in saved:
                m.momentum = momentum
                m.num_batches_tracked.copy_(count)

    return contextlib.nullcontext(), recompute()


def _checkpointed(original, module: nn.Module, *args, **kwargs):
    if not (torch.is_grad_enabled() and module.training):
        return original(*args, **kwargs)  # validation / inference: nothing to save
    from torch.utils.checkpoint import checkpoint

    return checkpoint(original, *args, use_reentrant=False, context_fn=functools.partial(_recompute_guard, module),
                      **kwargs)


def set_activation_checkpointing(model: PetlModel, enabled: bool = True) -> None:
    """Recompute each used layer's activations in backward instead of storing them (and the front
    end's too when it trains, i.e. full fine-tuning). Gradients, dropout masks (the RNG state is
    replayed) and BatchNorm statistics are unchanged (tests/test_train_options.py); state-dict
    names are untouched, so run files do not change."""
    backbone = model.backbone
    for layer in backbone.layers:
        if "forward" in layer.__dict__:
            del layer.forward
        if enabled:
            layer.forward = functools.partial(_checkpointed, layer.forward, layer)
    if "embed" in backbone.__dict__:
        del backbone.embed
    if enabled and backbone.frontend_trainable():
        modules = nn.ModuleList(backbone.frontend_modules())
        original = backbone.embed

        def embed(wave):
            if not (torch.is_grad_enabled() and backbone.training):
                return original(wave)
            from torch.utils.checkpoint import checkpoint

            return checkpoint(original, wave, use_reentrant=False,
                              context_fn=functools.partial(_recompute_guard, modules))

        backbone.embed = embed
