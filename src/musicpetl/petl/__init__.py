"""PETL method registry: `METHODS[name].apply(backbone, cfg)`.

A method only wraps or adds modules and marks what trains; it never forks a backbone's code. It
works through the PETL-facing surface every backbone layer exposes (see backbones/base.py).

`apply` draws its random init from torch's global generator only: under the same
`torch.manual_seed` it builds the same parameters under the same names, so a run's saved trainable
tensors load back onto a fresh backbone after re-applying the method by name and cfg.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from musicpetl.backbones.base import Backbone

from . import adapter, bitfit, lora, none, prefix, prompt, ssf
from musicpetl.errors import InputError


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable[[Backbone, dict], None]
    description: str
    # probing trains the head on cached frozen features: no backbone in the training loop
    uses_feature_cache: bool = False
    # reparameterisable methods fold into plain backbone weights for inference
    merge: Callable[[Backbone], Backbone] | None = None
    defaults: dict = field(default_factory=dict)
    # the run stores the whole backbone (it trained all of it), so reloading needs no pre-trained files
    stores_full_backbone: bool = False
    # backbone kinds (BackboneSpec.kind) it applies to: baselines have no PETL surface (README "Baselines")
    kinds: tuple[str, ...] = ("foundation",)
    # False: nothing is trained (off-the-shelf estimators); the run file records the system only
    trains: bool = True


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def _apply_finetune(backbone: Backbone, cfg: dict) -> None:
    for p in backbone.parameters():
        p.requires_grad_(True)


def _apply_probing(backbone: Backbone, cfg: dict) -> None:
    freeze(backbone)


METHODS: dict[str, Method] = {
    "finetune": Method("finetune", _apply_finetune, "full fine-tuning: every backbone weight trains",
                       stores_full_backbone=True, kinds=("foundation", "scratch")),
    "probing": Method("probing", _apply_probing, "frozen backbone, MLP head on cached features",
                      uses_feature_cache=True),
    "adapter": Method("adapter", adapter.apply, "bottleneck adapters after attention and FFN(s), plus the layers' "
                      "LayerNorms", defaults={"bottleneck": 16}),
    "prompt": Method("prompt", prompt.apply, "trainable input tokens prepended before the first layer",
                     defaults={"tokens": 64}),
    "prefix": Method("prefix", prefix.apply, "per-layer trainable key/value prefixes from an MLP",
                     defaults={"tokens": 32, "hidden": 512}),
    "bitfit": Method("bitfit", bitfit.apply, "biases of the linear maps and LayerNorms", merge=bitfit.merge),
    "ssf": Method("ssf", ssf.apply, "per-channel scale and shift after every linear map", merge=ssf.merge),
    "lora": Method("lora", lora.apply, "low-rank updates of every linear map (peft)", merge=lora.merge,
                   defaults={"rank": 2, "alpha": 2, "dropout": 0.0}),
    # further peft tuners that run on both backbones (not in the paper)
    "dora": Method("dora", lora.apply_dora, "LoRA on the direction plus a magnitude vector (peft, use_dora)",
                   merge=lora.merge, defaults={"rank": 2, "alpha": 2, "dropout": 0.0}),
    "ia3": Method("ia3", lora.apply_ia3, "(IA)^3 rescaling of keys, values and FFN activations (peft)",
                  merge=lora.merge),
    "loha": Method("loha", lora.apply_loha, "low-rank Hadamard-product updates (peft)", merge=lora.merge,
                   defaults={"rank": 2, "alpha": 2}),
    "lokr": Method("lokr", lora.apply_lokr, "low-rank Kronecker-product updates (peft)", merge=lora.merge,
                   defaults={"rank": 2, "alpha": 2}),
    # baselines: an off-the-shelf estimator, evaluated as it comes
    "none": Method("none", none.apply, "nothing trains: an off-the-shelf estimator evaluated as it comes",
                   kinds=none.KINDS, trains=False),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown petl.method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def apply_method(backbone: Backbone, name: str, cfg: dict | None = None) -> Method:
    """Freeze the backbone, then let the method add/unfreeze what it trains."""
    method = get_method(name)
    unknown = sorted(set(cfg or {}) - set(method.defaults))
    if unknown:
        raise InputError(f"petl.{name}: unknown option(s) {unknown}; valid: {sorted(method.defaults) or 'none'}")
    kind = getattr(backbone, "kind", "foundation")
    if kind not in method.kinds:
        allowed = [m for m, spec in METHODS.items() if kind in spec.kinds]
        raise InputError(f"petl.method {name!r} does not apply to {getattr(backbone, 'name', '?')}, a {kind} "
                         f"backbone; allowed: {', '.join(allowed)}")
    freeze(backbone)
    method.apply(backbone, {**method.defaults, **(cfg or {})})
    return method


def prepare_for_inference(backbone: Backbone, name: str) -> Backbone:
    """Fold a reparameterisable method (BitFit, SSF, LoRA, ...) into plain weights, in place.

    The result computes what the trained model computes at the cost of the bare backbone; methods
    that add computation (adapter, prompt, prefix) come back unchanged.
    """
    method = get_method(name)
    return method.merge(backbone) if method.merge is not None else backbone
