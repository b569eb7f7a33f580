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
from musicpetl.errors import InputError, MissingFileError

FORMAT = "musicpetl-run/1"


def trained_state(model: PetlModel, method: str) -> dict[str, torch.Tensor]:
    """What a run is: every trainable parameter, the head, and the buffers training changes
    (BatchNorm statistics under fine-tuning); for a method that trains the whole backbone, the
    whole model. The one definition: training's best snapshot, the saved file and the reload
    all go through here."""
    from musicpetl.petl import get_method

    if not get_method(method).trains:  # `none`: an off-the-shelf estimator; the file records it, no tensors
        return {}
    state = model.state_dict()
    if get_method(method).stores_full_backbone:
        keep = set(state)
    else:
        keep = ({n for n, p in model.named_parameters() if p.requires_grad} | {n for n in state if n.startswith("head.")}
                | model.trained_buffer_names())
    return {n: state[n].detach().to("cpu", copy=True).contiguous() for n in sorted(keep)}  # one copy, from a GPU too


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


# the run file's metadata schema: key -> (type, required)
_SCHEMA = {"format": (str, True), "backbone": (str, True), "num_layers": (int, True), "method": (str, True),
           "method_cfg": (dict, True), "n_outputs": (int, True), "task": (str, False), "classes": (list, False),
           "seed": (int, False), "checkpoint": (str, False), "backbone_options": (dict, False),
           "normalize_input": (bool, False), "layer_input": (str, False), "frame_level": (bool, False)}


def read_config(path: Path) -> dict:
    """The run's config, validated: every key of the schema with its type, known names, sane sizes.
    Any problem is an InputError naming the file and what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: run the train stage first (or give the path of a run file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable safetensors run file ({err})") from None
    if "musicpetl" not in meta:
        raise InputError(f"{path} is not a musicpetl run (no musicpetl metadata)")
    try:
        config = json.loads(meta["musicpetl"])
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: the musicpetl metadata is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the musicpetl metadata must be a JSON object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise InputError(f"{path}: run format {config.get('format')!r}, this version reads {FORMAT}")
    for key, (kind, required) in _SCHEMA.items():
        if key not in config:
            if required:
                raise InputError(f"{path}: run metadata lacks {key!r}")
            continue
        value = config[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{path}: run metadata {key!r} must be {kind.__name__}, got {value!r}")
    for key in ("num_layers", "n_outputs"):
        if config[key] < 1:
            raise InputError(f"{path}: run metadata {key!r} must be at least 1, got {config[key]}")
    from musicpetl.backbones import BACKBONES
    from musicpetl.petl import METHODS

    if config["backbone"] not in BACKBONES:
        raise InputError(f"{path}: unknown backbone {config['backbone']!r}; this version knows {', '.join(BACKBONES)}")
    if config["method"] not in METHODS:
        raise InputError(f"{path}: unknown method {config['method']!r}; this version knows {', '.join(METHODS)}")
    return config


def load_run(path: Path, device: str | torch.device = "cpu") -> PetlModel:
    """Rebuild the trained model: backbone + method + head, stored tensors loaded on top."""
    from safetensors import SafetensorError

    from musicpetl.backbones import build_backbone, load_backbone
    from musicpetl.petl import apply_method, get_method

    path = Path(path)
    cfg = read_config(path)
    legacy = {"normalize_input": cfg["normalize_input"]} if "normalize_input" in cfg else {}  # runs before 2026-12
    overrides = dict(cfg.get("backbone_options", legacy))
    seed = cfg.get("seed", 0)
    if get_method(cfg["method"]).stores_full_backbone:  # every weight is stored: no need for the pre-trained files
        backbone = build_backbone(cfg["backbone"], cfg["num_layers"], seed=seed, **overrides)
    else:
        backbone = load_backbone(cfg["backbone"], cfg.get("checkpoint") or None, cfg["num_layers"], seed=seed,
                                 **overrides)
    with torch.random.fork_rng(devices=[]):  # method modules are created (on the CPU), then overwritten
        torch.default_generator.manual_seed(seed)  # by the stored tensors
        apply_method(backbone, cfg["method"], cfg["method_cfg"])
        model = PetlModel(backbone, cfg["n_outputs"], cfg["num_layers"], method=cfg["method"],
                          layer_input=cfg.get("layer_input", "last"), frame_level=cfg.get("frame_level", False))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: the tensors cannot be read ({err})") from None
    expected = trained_state(model, cfg["method"])
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise InputError(f"{path} does not fit {cfg['backbone']} + {cfg['method']}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    wrong = [f"{n} {tuple(tensors[n].shape)} (expected {tuple(t.shape)})" for n, t in expected.items()
             if tensors[n].shape != t.shape]
    if wrong:
        raise InputError(f"{path}: tensors of the wrong shape for {cfg['backbone']} + {cfg['method']}: {wrong[:3]}")
    model.load_state_dict(tensors, strict=False)
    model.config = cfg
    return model.to(device).eval()


def export_peft_adapter(path: Path, out_dir: Path) -> Path:
    """A LoRA/DoRA run in peft's adapter format (the head stays in the run file)."""
    from musicpetl.petl import lora

    model = load_run(path)
    method = model.config["method"]
    if method not in ("lora", "dora"):
        raise InputError(f"{path} is a {method} run; only lora and dora runs export to peft's adapter format")
    cfg = {**model.config["method_cfg"], "use_dora": method == "dora"}
    from musicpetl.petl import get_method

    lora.export_peft(model.backbone, {**get_method(method).defaults, **cfg}, out_dir)
    return Path(out_dir)
