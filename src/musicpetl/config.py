"""Typed params loaded from params.yaml. Unknown names fail early, listing the valid ones."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


@dataclass
class SynthParams:
    n_clips: int = 240
    duration: float = 6.0


@dataclass
class SplitParams:
    valid_share: float = 0.15
    test_share: float = 0.15


@dataclass
class AugmentParams:
    per_item: int = 1  # augmented copies per training item; 0 = every variant
    pitch_shifts: list[int] = field(default_factory=lambda: [-4, -3, -2, -1, 1, 2, 3, 4])
    time_stretches: list[float] = field(default_factory=lambda: [0.95, 0.975, 1.025, 1.05])


@dataclass
class DataParams:
    dataset: str = "synth"
    task: str = "key"
    root: str = "data/raw"
    sample_rate: int = 24000
    overrides: dict = field(default_factory=dict)  # per-dataset local paths / archive URLs
    synth: SynthParams = field(default_factory=SynthParams)
    split: SplitParams = field(default_factory=SplitParams)
    augment: AugmentParams = field(default_factory=AugmentParams)


@dataclass
class BackboneParams:
    name: str = "mert-tiny"
    checkpoint: str = ""
    num_layers: int = 6
    normalize_input: bool = True  # MERT only: per-clip (x - mean) / std, see REFERENCE.md
    segment_seconds: float = 0.0  # whole-track inference/caching segments; 0 = the backbone's default


@dataclass
class PetlParams:
    method: str = "probing"
    # per-method hyper-parameters, `petl.<method>.<name>`; checked against the method's defaults
    options: dict = field(default_factory=dict)


@dataclass
class TrainParams:
    batch_size: int = 16
    lr: float = 1e-4
    min_lr: float = 1e-7
    weight_decay: float = 0.0
    max_steps: int = 1000
    eval_every: int = 100
    grad_clip: float = 1.0
    crop_seconds: float = 5.0
    precision: str = "fp32"  # fp32 | bf16
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0


@dataclass
class EvalParams:
    batch_size: int = 8
    bootstrap: int = 1000
    alpha: float = 0.05


@dataclass
class AnalysisParams:
    max_items: int = 200  # test items used for the feature-correlation analysis


@dataclass
class Params:
    seed: int = 0
    data: DataParams = field(default_factory=DataParams)
    backbone: BackboneParams = field(default_factory=BackboneParams)
    petl: PetlParams = field(default_factory=PetlParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    analysis: AnalysisParams = field(default_factory=AnalysisParams)

    def data_context(self):
        """What dataset entries read (data/dataset.py Context)."""
        from musicpetl.data.dataset import Context

        return Context(seed=self.seed, task=self.data.task, overrides=dict(self.data.overrides), split=vars(self.data.split),
                       synth=vars(self.data.synth))

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
            kwargs[name] = _coerce(value, default, path)
    return cls(**kwargs)


def _coerce(value, default, path):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return type(default)(value) if isinstance(default, float) else value
    if isinstance(default, str):
        return "" if value is None else str(value)
    return value


def parse_params(raw: dict) -> Params:
    raw = dict(raw or {})
    petl_raw = dict(raw.get("petl") or {})
    # `petl.<method>: {...}` blocks sit beside `petl.method` in params.yaml (so `-S petl.lora.rank=8` works)
    method = petl_raw.pop("method", PetlParams.method)
    raw["petl"] = {"method": method, "options": petl_raw}
    params = _build(Params, raw, "")
    validate(params)
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


def validate(p: Params) -> None:
    """Every choice-valued param against its registry, before any work starts."""
    from musicpetl.backbones import BACKBONES
    from musicpetl.data.registry import DATASETS
    from musicpetl.petl import METHODS
    from musicpetl.tasks import TASKS

    checks = [("data.dataset", p.data.dataset, DATASETS), ("data.task", p.data.task, TASKS),
              ("backbone.name", p.backbone.name, BACKBONES), ("petl.method", p.petl.method, METHODS),
              ("train.precision", p.train.precision, ("fp32", "bf16")),
              ("train.device", p.train.device, ("auto", "cpu", "cuda"))]
    for name, value, valid in checks:
        if value not in valid:
            raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    tasks = DATASETS[p.data.dataset].tasks
    if p.data.task not in tasks:
        raise ConfigError(f"dataset {p.data.dataset!r} has no task {p.data.task!r}; valid: {', '.join(tasks)}")
    for method, opts in p.petl.options.items():
        if method not in METHODS:
            raise ConfigError(f"unknown params block petl.{method}; valid: method, {', '.join(METHODS)}")
        allowed = METHODS[method].defaults
        bad = sorted(set(opts or {}) - set(allowed))
        if bad:
            raise ConfigError(f"unknown param petl.{method}.{bad[0]}; valid: {', '.join(allowed) or '(none)'}")
