"""LoRA (Hu et al. 2022) through the `peft` library, plus the other peft tuners that fit our layers.

LoRA: `W + (alpha / r) B A` on every map of each used layer's `linears()` (attention q/k/v/out,
FFN in/out, MusicFM's kernel-1 pointwise convs), A kaiming-uniform, B zero (peft's defaults), so
the adapted model starts as the pre-trained one. Targets are exact module paths
(`layers.<i>.<role>`), never name patterns: nothing outside the used layers can be matched.
`merge` folds every peft layer into its base map and puts the plain map back.

The extras (`dora`, `ia3`, `loha`, `lokr`) reuse the same injection and merge; they are the peft
0.21 tuners that run on both backbones. Not registered: OFT, BOFT, HRA, FourierFT, RoAd, MiSS,
SHiRA, C3A, DeLoRA, RandLoRA and AdaLoRA reject MusicFM's kernel-1 `nn.Conv1d` (they would run on
MERT, or on MusicFM without its pointwise convs); VeRA and VB-LoRA keep shared state on the
tuner object, which `inject_adapter_in_model` refuses; AdaLoRA also needs a rank-allocation call
in the training loop.
"""
from __future__ import annotations

from typing import Callable

from musicpetl.backbones.base import Backbone


def target_names(backbone: Backbone, roles: Callable[[str], bool] = lambda role: True) -> list[str]:
    """Full module paths of the layers' linear maps whose role passes `roles`."""
    return [f"layers.{i}.{role}" for i, layer in enumerate(backbone.layers)
            for role in layer.linears() if roles(role)]


def inject(backbone: Backbone, config) -> None:
    """Insert the tuner's layers in place; peft marks only its own parameters trainable."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in backbone.modules()):
        raise RuntimeError("backbone already carries peft layers: apply the method once")
    inject_adapter_in_model(config, backbone)


def lora_config(backbone: Backbone, cfg: dict):
    from peft import LoraConfig

    return LoraConfig(r=int(cfg["rank"]), lora_alpha=float(cfg["alpha"]), lora_dropout=float(cfg["dropout"]),
                      target_modules=target_names(backbone), bias="none", init_lora_weights=True,
                      use_dora=bool(cfg.get("use_dora", False)))


def apply(backbone: Backbone, cfg: dict) -> None:
    inject(backbone, lora_config(backbone, cfg))


def export_peft(backbone: Backbone, cfg: dict, out_dir) -> None:
    """Write the LoRA (or DoRA) weights in peft's adapter format: adapter_config.json +
    adapter_model.safetensors, loadable with `inject_adapter_in_model` + `set_peft_model_state_dict`
    onto the same backbone (module paths `layers.<i>.<role>`)."""
    from pathlib import Path

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lora_config(backbone, cfg).save_pretrained(str(out))
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(backbone).items()}
    save_file(state, str(out / "adapter_model.safetensors"))


def apply_dora(backbone: Backbone, cfg: dict) -> None:
    """DoRA (Liu et al. 2024): LoRA on the direction, plus a trained magnitude per output channel."""
    apply(backbone, {**cfg, "use_dora": True})


def apply_ia3(backbone: Backbone, cfg: dict) -> None:
    """(IA)^3 (Liu et al. 2022): learned rescaling of keys, values and the FFN's inner activations."""
    from peft import IA3Config

    def is_ffn_out(role: str) -> bool:  # the second FFN map: IA3 scales its *input* (the inner activation)
        return role.endswith("fc2")

    targets = target_names(backbone, lambda r: r.endswith(("k_proj", "v_proj")) or is_ffn_out(r))
    inject(backbone, IA3Config(target_modules=targets, feedforward_modules=target_names(backbone, is_ffn_out),
                               init_ia3_weights=True))


def apply_loha(backbone: Backbone, cfg: dict) -> None:
    """LoHa (Hyeon-Woo et al. 2022): the update is a Hadamard product of two low-rank products."""
    from peft import LoHaConfig

    inject(backbone, LoHaConfig(r=int(cfg["rank"]), alpha=float(cfg["alpha"]), target_modules=target_names(backbone)))


def apply_lokr(backbone: Backbone, cfg: dict) -> None:
    """LoKr (Yeh et al. 2024): the update is a Kronecker product of a small and a low-rank factor."""
    from peft import LoKrConfig

    inject(backbone, LoKrConfig(r=int(cfg["rank"]), alpha=float(cfg["alpha"]), target_modules=target_names(backbone)))


def merge(backbone: Backbone) -> Backbone:
    """Fold every peft layer into its base map (in place) and put the plain map back."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [(n, m) for n, m in backbone.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, m in tuned:
        m.merge(safe_merge=True)  # safe_merge: raises on a non-finite merged weight
        parent, _, attr = name.rpartition(".")
        setattr(backbone.get_submodule(parent) if parent else backbone, attr, m.get_base_layer())
    if hasattr(backbone, "peft_config"):
        del backbone.peft_config  # peft's bookkeeping attribute: the merged backbone is a plain one again
    return backbone
