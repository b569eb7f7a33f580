"""Backbone + PETL method + time-mean pooling + the paper's MLP head."""
from __future__ import annotations

import torch
from torch import nn

from musicpetl.backbones.base import Backbone


class Head(nn.Module):
    """Linear(d, d) -> Dropout(0.5) -> ReLU -> Linear(d, n_out), as the paper and its code."""

    def __init__(self, dim: int, n_out: int, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, n_out))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class PetlModel(nn.Module):
    """Predicts from the time-mean of the last used layer."""

    def __init__(self, backbone: Backbone, n_out: int, num_layers: int, method: str = "finetune",
                 head_dropout: float = 0.5):
        super().__init__()
        self.backbone, self.num_layers, self.method = backbone, num_layers, method
        self.head = Head(backbone.hidden_size, n_out, head_dropout)

    def pooled(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone(wave, self.num_layers)[-1].mean(dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(wave))

    def train(self, mode: bool = True):
        """BatchNorm whose scale is frozen keeps its running statistics (a frozen backbone stays
        bit-identical; BitFit trains MusicFM's BatchNorm bias but not its statistics, which a run
        file, holding only trained parameters, could not restore)."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (m.weight is not None and m.weight.requires_grad):
                    m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
