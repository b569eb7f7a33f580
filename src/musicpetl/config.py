"""Typed params loaded from params.yaml: types, ranges, unknown keys and the relations between
params, checked without importing any registry (so a stage's code closure stays its own).

Names that registries define (dataset, task, backbone, method and its options) and relations that
need a registry's facts (sample rate vs backbone, layers vs depth) are checked by
`musicpetl.checks`, which the pipeline's first stage (`check`) runs before any stage does work."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from musicpetl.errors import MusicPetlError


class ConfigError(MusicPetlError, ValueError):
    pass


def _p(default=dataclasses.MISSING, *, factory=None, lo=None, hi=None, lo_open=False, hi_open=False,
       choices=None, items=None):
    """A param field with its allowed range: [lo, hi] (open ends with lo_open/hi_open), choices, or
    the type and range of list items (`items`: (type, lo))."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "items": items}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SynthParams:
    n_clips: int = _p(240, lo=10)
    duration: float = _p(6.0, lo=1.0)


@dataclass
class SplitParams:
    valid_share: float = _p(0.15, lo=0.0, hi=1.0, hi_open=True)
    test_share: float = _p(0.15, lo=0.0, hi=1.0, hi_open=True)


@dataclass
class AugmentParams:
    per_item: int = _p(1, lo=0)  # augmented copies per training item; 0 = every variant
    pitch_shifts: list = _p(factory=lambda: [-4, -3, -2, -1, 1, 2, 3, 4], items=(int, -12))
    time_stretches: list = _p(factory=lambda: [0.95, 0.975, 1.025, 1.05], items=(float, 0.5))


@dataclass
class DataParams:
    dataset: str = "synth"
    task: str = "key"
    root: str = "data/raw"
    sample_rate: int = _p(24000, lo=8000)
    overrides: dict = field(default_factory=dict)  # per-dataset local paths / archive URLs
    synth: SynthParams = field(default_factory=SynthParams)
    split: SplitParams = field(default_factory=SplitParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    # split stage: share of each split's listed items whose audio must be on disk, and whether a
    # class with validation/test items but none in train may pass (data/splits.py check_splits)
    min_present: float = _p(0.95, lo=0.0, hi=1.0)
    allow_missing_classes: bool = False


@dataclass
class BackboneParams:
    name: str = "mert-tiny"
    checkpoint: str = ""
    num_layers: int = _p(6, lo=1)
    normalize_input: bool = True  # MERT only: per-clip (x - mean) / std (docs/REFERENCE.md)
    segment_seconds: float = _p(0.0, lo=0.0)  # whole-track inference/caching segments; 0 = the backbone's default


@dataclass
class PetlParams:
    method: str = "probing"
    # per-method hyper-parameters, `petl.<method>.<name>`; checked against the method's defaults
    options: dict = field(default_factory=dict)


@dataclass
class TrainParams:
    batch_size: int = _p(16, lo=1)
    lr: float = _p(1e-4, lo=0.0, lo_open=True)
    min_lr: float = _p(1e-7, lo=0.0)
    weight_decay: float = _p(0.0, lo=0.0)
    max_steps: int = _p(1000, lo=1)
    eval_every: int = _p(100, lo=1)
    grad_clip: float = _p(1.0, lo=0.0)
    crop_seconds: float = _p(5.0, lo=0.0, lo_open=True)
    precision: str = _p("fp32", choices=("fp32", "bf16"))
    device: str = _p("auto", choices=("auto", "cpu", "cuda"))
    num_workers: int = _p(0, lo=0)
    # --- training at scale (README "Training at scale") ---
    grad_accum: int = _p(1, lo=1)  # micro-batches per optimiser step; batch_size is the whole step's batch
    warmup_steps: int = _p(0, lo=0)  # linear LR warm-up before the cosine decay; 0 = none (the reference)
    patience: int = _p(0, lo=0)  # early stopping: validations without improvement before stopping; 0 = never
    activation_checkpointing: bool = False  # recompute each layer's activations in backward (memory for time)
    layer_input: str = _p("last", choices=("last", "mean", "weighted"))  # what the head reads of the used layers
    cache_frontend: bool = False  # PETL: the frozen front end's output of every training window, computed once
    frontend_hop_seconds: float = _p(0.0, lo=0.0)  # cached front end: window hop; 0 = crop_seconds
    frontend_dtype: str = _p("float32", choices=("float32", "float16"))
    checkpoint_every: int = _p(0, lo=0)  # steps between resumable checkpoints (.musicpetl/checkpoints); 0 = none
    nproc: int = _p(1, lo=1)  # processes (one per GPU) on this machine; > 1: the stage runs under torchrun (DDP)
    valid_items: int = _p(0, lo=0)  # validate on a fixed seeded subset of N validation items; 0 = all (the paper)


@dataclass
class FeaturesParams:
    """The cache_features stage's HDF5 file (probing, evaluation of probing runs, correlate)."""
    layers: int = _p(6, lo=0)  # layers it holds (>= backbone.num_layers; 0 = all): probing at any depth <= it reuses it
    dtype: str = _p("float32", choices=("float32", "float16"))
    compression: str = _p("gzip", choices=("none", "lzf", "gzip"))  # gzip at level 1 (BENCHMARKS.md: lzf gains ~nothing)


@dataclass
class EvalParams:
    batch_size: int = _p(8, lo=1)
    bootstrap: int = _p(1000, lo=0)
    alpha: float = _p(0.05, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


@dataclass
class AnalysisParams:
    max_items: int = _p(200, lo=1)  # test items used for the feature-correlation analysis


@dataclass
class Params:
    seed: int = _p(0, lo=0)
    data: DataParams = field(default_factory=DataParams)
    backbone: BackboneParams = field(default_factory=BackboneParams)
    petl: PetlParams = field(default_factory=PetlParams)
    train: TrainParams = field(default_factory=TrainParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    eval: EvalParams = field(default_factory=EvalParams)
    analysis: AnalysisParams = field(default_factory=AnalysisParams)

    def method_options(self) -> dict:
        return dict(self.petl.options.get(self.petl.method, {}) or {})


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'params'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown param {where + '.' if where else ''}{unknown[0]}; valid: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        f, path = fields[name], f"{where}.{name}" if where else name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, path)
        else:
            kwargs[name] = _check_range(coerce(value, default, path), f.metadata, path)
    return cls(**kwargs)


def coerce(value, default, path):
    """`value` checked against the type of `default` (a bool, int, float, str, list or dict param)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):  # an integer param takes integers only: 1.5 is refused, not truncated
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return "" if value is None else value
    if isinstance(default, (list, dict)) and not isinstance(value, type(default)):
        raise ConfigError(f"{path} must be a {'list' if isinstance(default, list) else 'mapping'}, got {value!r}")
    return value


def check_number(value, path: str, lo=None, hi=None, lo_open=False, hi_open=False):
    """`value` within [lo, hi] (open ends as asked), else one line naming the key, value and range."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {value!r}")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        left = "any" if lo is None else f"{'(' if lo_open else '['}{lo}"
        right = "" if hi is None else f"{hi}{')' if hi_open else ']'}"
        allowed = f"{left}, {right or 'inf)'}" if lo is not None else f"at most {hi}"
        raise ConfigError(f"{path} = {value!r} is out of range; allowed: {allowed}")
    return value


def _check_range(value, meta, path):
    if not meta:
        return value
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"unknown {path} {value!r}; valid: {', '.join(meta['choices'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, path, meta["lo"], meta["hi"], meta["lo_open"], meta["hi_open"])
    if meta.get("items"):
        kind, lo = meta["items"]
        for i, v in enumerate(value):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
            if not ok:
                raise ConfigError(f"{path}[{i}] must be {'an integer' if kind is int else 'a number'}, got {v!r}")
            check_number(v, f"{path}[{i}]", lo=lo if kind is float else -abs(lo), hi=None if kind is float else abs(lo))
    return value


def _cross_checks(p: "Params") -> None:
    """Relations between params that need no registry (those that do: musicpetl.checks)."""
    s = p.data.split
    if s.valid_share + s.test_share >= 1:
        raise ConfigError(f"data.split.valid_share + data.split.test_share = {s.valid_share + s.test_share:g} "
                          f"leaves no training items; allowed: a sum below 1")
    if p.train.min_lr > p.train.lr:
        raise ConfigError(f"train.min_lr = {p.train.min_lr!r} is above train.lr = {p.train.lr!r}; allowed: min_lr <= lr")
    t = p.train
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size = {t.batch_size} is not a multiple of train.grad_accum = {t.grad_accum}; "
                          f"allowed: a grad_accum that divides the batch (batch_size is the whole step's batch)")
    if t.warmup_steps >= t.max_steps:
        raise ConfigError(f"train.warmup_steps = {t.warmup_steps} leaves no step after the warm-up "
                          f"(train.max_steps = {t.max_steps}); allowed: 0 to {t.max_steps - 1}")
    if p.data.dataset == "synth" and p.train.crop_seconds > p.data.synth.duration:
        raise ConfigError(f"train.crop_seconds = {p.train.crop_seconds:g} is longer than the synth clips "
                          f"(data.synth.duration = {p.data.synth.duration:g}); allowed: at most the clip length")
    if p.data.dataset == "synth" and p.backbone.segment_seconds > p.data.synth.duration:
        raise ConfigError(f"backbone.segment_seconds = {p.backbone.segment_seconds:g} is longer than the synth clips "
                          f"(data.synth.duration = {p.data.synth.duration:g}); allowed: 0 (backbone default) or at most "
                          f"the clip length")


def parse_params(raw: dict) -> Params:
    raw = dict(raw or {})
    petl_raw = dict(raw.get("petl") or {})
    # `petl.<method>: {...}` blocks sit beside `petl.method` in params.yaml (so `-S petl.lora.rank=8` works)
    method = petl_raw.pop("method", PetlParams.method)
    raw["petl"] = {"method": method, "options": petl_raw}
    params = _build(Params, raw, "")
    for method, opts in params.petl.options.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"petl.{method} must be a mapping of the method's options, got {opts!r}")
    _cross_checks(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root")
    text = path.read_text()
    check_octal(text, path)
    return parse_params(yaml.safe_load(text) or {})


def check_octal(text: str, where) -> None:
    """YAML 1.1 reads `seed: 0501` as octal 321 (a bug in the reference configs): refuse it."""
    import re

    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*([\w.-]+):\s*(0[0-7]+)\s*(#.*)?$", line)
        if m:
            raise ConfigError(f"{where}:{n}: {m.group(1)}: {m.group(2)} has a leading zero, which YAML reads as "
                              f"octal {int(m.group(2), 8)}; write {int(m.group(2))} (or quote it)")
