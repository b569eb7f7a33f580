"""`none`: nothing trains. The method of off-the-shelf estimators (backbone kind "estimator", e.g.
`madmom`): the train stage writes a run file that records the estimator and its task and holds no
tensors, and the evaluate stage asks the estimator for each test track's output
(backbones/estimators.py). Refused for every other backbone (checks.py, and here for a hand-made
call), as every other method is refused for an estimator."""
from __future__ import annotations

from torch import nn

from musicpetl.errors import InputError

KINDS = ("estimator",)


def apply(backbone: nn.Module, cfg: dict) -> None:
    kind = getattr(backbone, "kind", "foundation")
    if kind not in KINDS:
        raise InputError(f"petl.method 'none' trains nothing and is for off-the-shelf estimators; "
                         f"{getattr(backbone, 'name', type(backbone).__name__)} is a {kind} backbone")
    for p in backbone.parameters():
        p.requires_grad_(False)
