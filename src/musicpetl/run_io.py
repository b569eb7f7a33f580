"""A trained run on disk: only what was trained (method parameters + head) and the config to rebuild.

One safetensors file; its metadata holds the JSON config (backbone name, layers, method and its
options, task, seed, checkpoint). Loading rebuilds the backbone (official weights or the same seeded
init), re-applies the method and loads the stored tensors on top, so a 400 kB LoRA run needs no
copy of the 95M frozen weights. Full fine-tuning stores the whole backbone (it trained all of it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from musicpetl.io import atomic_path
from musicpetl.model import PetlModel

FORMAT = "musicpetl-run/1"


def trained_state(model: PetlModel, method: str) -> dict[str, torch.Tensor]:
    """The tensors a run must store: every trainable parameter and the head; for full fine-tuning
    the whole model (buffers such as BatchNorm statistics moved with it)."""
    state = model.state_dict()
    if method == "finetune":
        keep = set(state)
    else:
        keep = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n in state if n.startswith("head.")}
    return {n: state[n].detach().cpu().contiguous() for n in sorted(keep)}


def save_run(path: Path, model: PetlModel, method: str, method_cfg: dict, backbone_name: str, num_layers: int,
             task_info: dict) -> int:
    """Write the run; returns its size in bytes."""
    tensors = trained_state(model, method)
    config = {"format": FORMAT, "backbone": backbone_name, "num_layers": int(num_layers), "method": method,
              "method_cfg": method_cfg, "n_outputs": int(model.head.net[-1].out_features), **task_info}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"musicpetl": json.dumps(config)})
    return path.stat().st_size


def read_config(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "musicpetl" not in meta:
        raise ValueError(f"{path} is not a musicpetl run (no musicpetl metadata)")
    config = json.loads(meta["musicpetl"])
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: run format {config.get('format')!r}, this version reads {FORMAT}")
    return config


def load_run(path: Path, device: str | torch.device = "cpu") -> PetlModel:
    """Rebuild the trained model: backbone + method + head, stored tensors loaded on top."""
    from musicpetl.backbones import build_backbone, load_backbone
    from musicpetl.petl import apply_method

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the train stage first")
    cfg = read_config(path)
    overrides = {"normalize_input": cfg["normalize_input"]} if "normalize_input" in cfg else {}
    if cfg["method"] == "finetune":  # every weight is stored: no need for the pre-trained files
        backbone = build_backbone(cfg["backbone"], cfg["num_layers"], seed=cfg.get("seed", 0), **overrides)
    else:
        backbone = load_backbone(cfg["backbone"], cfg.get("checkpoint") or None, cfg["num_layers"],
                                 seed=cfg.get("seed", 0), **overrides)
    with torch.random.fork_rng():  # method modules are created, then overwritten by the stored tensors
        torch.manual_seed(cfg.get("seed", 0))
        apply_method(backbone, cfg["method"], cfg["method_cfg"])
        model = PetlModel(backbone, cfg["n_outputs"], cfg["num_layers"], method=cfg["method"])
    tensors = load_file(str(path))
    expected = set(trained_state(model, cfg["method"]))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {cfg['backbone']} + {cfg['method']}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.load_state_dict(tensors, strict=False)
    model.config = cfg
    return model.to(device).eval()


def export_peft_adapter(path: Path, out_dir: Path) -> Path:
    """A LoRA/DoRA run in peft's adapter format (the head stays in the run file)."""
    from musicpetl.petl import lora

    model = load_run(path)
    method = model.config["method"]
    if method not in ("lora", "dora"):
        raise ValueError(f"{path} is a {method} run; only lora and dora runs export to peft's adapter format")
    cfg = {**model.config["method_cfg"], "use_dora": method == "dora"}
    from musicpetl.petl import get_method

    lora.export_peft(model.backbone, {**get_method(method).defaults, **cfg}, out_dir)
    return Path(out_dir)
