"""Every param checked against the registries, before any stage does work.

config.py checks types, ranges, unknown keys and the relations between params on its own; this
module adds what needs a registry: names (dataset, task, backbone, method), the options of every
`petl.<method>` block, and the facts of the chosen backbone (sample rate, depth). The pipeline's
first stage (`check`, which depends on the whole params.yaml) runs it, so `dvc repro`,
`dvc exp run` and `./run` all stop here, one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

from musicpetl.config import ConfigError, Params, check_number, coerce


def _choice(path: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {path} {value!r}; valid: {', '.join(valid)}")


def check_params(p: Params) -> None:
    from musicpetl.backbones import BACKBONES
    from musicpetl.data.registry import DATASETS
    from musicpetl.petl import METHODS
    from musicpetl.tasks import TASKS

    _choice("data.dataset", p.data.dataset, DATASETS)
    _choice("data.task", p.data.task, TASKS)
    _choice("backbone.name", p.backbone.name, BACKBONES)
    _choice("petl.method", p.petl.method, METHODS)
    tasks = DATASETS[p.data.dataset].tasks
    if p.data.task not in tasks:
        raise ConfigError(f"dataset {p.data.dataset!r} has no task {p.data.task!r}; valid: {', '.join(tasks)}")
    spec = BACKBONES[p.backbone.name]
    if p.data.sample_rate != spec.sample_rate:
        raise ConfigError(f"data.sample_rate = {p.data.sample_rate} but {p.backbone.name} reads "
                          f"{spec.sample_rate} Hz audio; allowed: {spec.sample_rate}")
    _check_kind(p, spec, METHODS)
    if p.backbone.num_layers > spec.depth and not spec.baseline:  # a baseline runs whole: num_layers unread
        raise ConfigError(f"backbone.num_layers = {p.backbone.num_layers} but {p.backbone.name} has {spec.depth} "
                          f"layers; allowed: 1 to {spec.depth}")
    if p.features.layers and not spec.baseline and not p.backbone.num_layers <= p.features.layers <= spec.depth:
        raise ConfigError(f"features.layers = {p.features.layers} but the cache must hold backbone.num_layers = "
                          f"{p.backbone.num_layers} and {p.backbone.name} has {spec.depth}; allowed: "
                          f"{p.backbone.num_layers} to {spec.depth}, or 0 (every layer)")
    if p.train.cache_frontend and METHODS[p.petl.method].stores_full_backbone:
        raise ConfigError(f"train.cache_frontend = true but petl.method = {p.petl.method!r} trains the front end, "
                          f"so its output is not fixed; allowed: false for this method")
    if p.backbone.checkpoint and not spec.pretrained:
        raise ConfigError(f"backbone.checkpoint = {p.backbone.checkpoint!r} but {p.backbone.name} is randomly "
                          f"initialised from the seed; allowed: '' (empty)")
    for method, opts in p.petl.options.items():
        if method not in METHODS:
            raise ConfigError(f"unknown params block petl.{method}; valid: method, {', '.join(METHODS)}")
        allowed = METHODS[method].defaults
        for name, value in (opts or {}).items():
            path = f"petl.{method}.{name}"
            if name not in allowed:
                raise ConfigError(f"unknown param {path}; valid: {', '.join(allowed) or '(none)'}")
            default = allowed[name]
            value = coerce(value, default, path)  # the same type rules as every other param
            if name == "dropout":
                check_number(value, path, lo=0.0, hi=1.0, hi_open=True)
            elif isinstance(default, (int, float)):
                check_number(value, path, lo=0, lo_open=True)


def _check_kind(p: Params, spec, methods) -> None:
    """Baselines (README "Baselines"): a scratch CNN trains with `finetune` only, an estimator runs
    with `none` only, and no foundation backbone takes `none`; each baseline does only its tasks."""
    method = methods[p.petl.method]
    if spec.kind not in method.kinds:
        allowed = [m for m, spec_m in methods.items() if spec.kind in spec_m.kinds]
        raise ConfigError(f"petl.method = {p.petl.method!r} does not apply to {p.backbone.name} (a {spec.kind} "
                          f"backbone); allowed: {', '.join(allowed)}")
    if spec.tasks and p.data.task not in spec.tasks:
        raise ConfigError(f"data.task = {p.data.task!r} but {p.backbone.name} is a {spec.kind} baseline for "
                          f"{', '.join(spec.tasks)}; allowed: {', '.join(spec.tasks)}")
    if spec.baseline and p.train.layer_input != "last":
        raise ConfigError(f"train.layer_input = {p.train.layer_input!r} but {p.backbone.name} gives one hidden "
                          f"state (the whole network's); allowed: last")
