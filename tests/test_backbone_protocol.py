"""Every registered backbone against the PETL-facing Protocol and against its own spec.

`check_petl_surface` (backbones/base.py) is what PETL methods rely on: the `PetlBackbone` and
`PetlLayer` Protocols plus the semantic rules (linear maps at their sub-module paths, affine
LayerNorms over the hidden size, ...). Here every registry entry is built and checked (toy-size
ones always, full-size ones as slow tests), the check is shown to catch broken surfaces, the
spec's facts (sample rate, frame rate, depth, width, segment, options, checkpoint format) are
checked against the built model, every full-size architecture is shown to have a toy-size twin
(so that the methods x backbones matrix of test_petl.py runs its code), and no code outside
backbones/ branches on a backbone's name.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from musicpetl.backbones import BACKBONES, build_backbone
from musicpetl.backbones.base import PetlBackbone, PetlLayer, check_petl_surface

# baselines (spec.baseline: scratch CNNs, off-the-shelf estimators) have no PETL surface by design and are
# skipped here; tests/test_baselines.py checks that every PETL method is refused for them
TINY = [name for name, spec in BACKBONES.items() if not spec.pretrained and not spec.baseline]
FULL = [name for name, spec in BACKBONES.items() if spec.pretrained]
ROOT = Path(__file__).resolve().parents[1]


def architecture(model) -> tuple:
    """What decides which code runs: the model class, each layer class, the front-end module classes,
    and the config's switches (booleans and strings), sizes left out."""
    switches = tuple(sorted((k, v) for k, v in vars(model.cfg).items() if isinstance(v, (bool, str))))
    return (type(model), tuple(sorted({type(layer).__name__ for layer in model.layers})),
            tuple(type(m).__name__ for m in model.frontend_modules()), switches)


@torch.no_grad()
def check_backbone(name: str, num_layers: int | None = None):
    spec = BACKBONES[name]
    model = build_backbone(name, num_layers=num_layers).eval()
    # the Protocols and the semantic rules
    assert isinstance(model, PetlBackbone)
    assert all(isinstance(layer, PetlLayer) for layer in model.layers)
    assert check_petl_surface(model) == []
    # adapter sites really output (B, T, d): what an adapter transforms
    seen = {}
    hooks = [site.register_forward_hook(lambda m, i, o, key=(j, s): seen.__setitem__(key, o))
             for j, layer in enumerate(model.layers) for s, site in layer.adapter_sites().items()]
    x = 0.1 * torch.randn(2, spec.sample_rate, generator=torch.Generator().manual_seed(0))
    hs = model(x)
    for h in hooks:
        h.remove()
    t = model.n_frames(x.shape[1])
    assert len(seen) == sum(len(layer.adapter_sites()) for layer in model.layers)
    assert all(isinstance(o, torch.Tensor) and o.shape == (2, t, spec.hidden_size) for o in seen.values())
    # the spec's facts are the model's
    assert model.name == name and model.sample_rate == spec.sample_rate and model.hidden_size == spec.hidden_size
    assert model.frame_rate == spec.frame_rate and model.default_segment_seconds == spec.default_segment_seconds
    assert model.cfg.num_layers == spec.depth
    assert [h.shape for h in hs] == [(2, t, spec.hidden_size)] * len(model.layers)
    ten = model.n_frames(10 * spec.sample_rate)  # frames per second of audio, to within one frame
    assert abs(ten - 10 * spec.frame_rate) <= 1, (ten, spec.frame_rate)
    assert spec.frontend and spec.default_segment_seconds > 0
    for option in spec.options:  # a `backbone.<option>` param is a config field build() takes
        assert hasattr(model.cfg, option)
        assert getattr(build_backbone(name, num_layers=1, **{option: getattr(model.cfg, option)}).cfg, option) == \
            getattr(model.cfg, option)
    assert (spec.checkpoint is not None) == spec.pretrained
    if spec.pretrained:
        hub = spec.checkpoint.hub
        assert hub.repo and hub.files and hub.licence and set(hub.files.values()) >= {"weights"}
    return model


@pytest.mark.parametrize("name", TINY)
def test_toy_backbones_fit_the_protocol_and_their_spec(name):
    model = check_backbone(name)
    assert len(model.layers) == BACKBONES[name].depth


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_backbones_fit_the_protocol_and_their_spec(name):
    """Built at full depth (random weights), checked, and matched to a toy twin: the methods x
    backbones matrix runs on the toy twins, so each full-size architecture must have one."""
    model = check_backbone(name, num_layers=None)
    assert len(model.layers) == BACKBONES[name].depth
    twins = [t for t in TINY if architecture(build_backbone(t, num_layers=None)) == architecture(model)]
    assert twins, f"{name}: no toy-size backbone has its architecture {architecture(model)}"


def test_the_check_catches_a_broken_surface():
    """The checker is not a formality: each contract break below is reported."""
    def broken(edit) -> list[str]:
        model = build_backbone("musicfm-tiny", num_layers=2)
        edit(model, model.layers[0])
        return check_petl_surface(model)

    assert broken(lambda m, layer: None) == []
    assert any("not the sub-module path" in p for p in broken(
        lambda m, layer: setattr(layer, "linears", lambda: {"ffn9.fc1": layer.ffn1.fc1})))
    assert any("q/k/v/out" in p for p in broken(
        lambda m, layer: setattr(layer, "linears", lambda: {"ffn1.fc1": layer.ffn1.fc1})))
    assert any("not a Linear or kernel-1 Conv1d" in p for p in broken(
        lambda m, layer: setattr(layer, "linears", lambda: {**type(layer).linears(layer),
                                                            "conv.depthwise_conv": layer.conv.depthwise_conv})))
    assert any("affine LayerNorm" in p for p in broken(
        lambda m, layer: setattr(layer, "norms", lambda: {"bn": layer.conv.batch_norm})))
    assert any("bitfit extra" in p for p in broken(
        lambda m, layer: setattr(layer, "bitfit_extras", lambda: {"x": nn.Parameter(torch.zeros(3))})))
    assert any("adapter site" in p for p in broken(
        lambda m, layer: setattr(layer, "adapter_sites", lambda: {"act": nn.SiLU()})))
    assert any("not a PetlLayer" in p for p in broken(lambda m, layer: setattr(m.layers, "0", nn.Linear(2, 2))))
    assert any("kv_prefix" in p for p in broken(lambda m, layer: setattr(layer.attn, "kv_prefix", nn.Identity())))
    assert any("share parameters" in p for p in broken(
        lambda m, layer: setattr(m, "frontend_modules", lambda: [m.frontend, m.layers[1]])))
    model = build_backbone("mert-tiny", num_layers=1)
    del model.input_prompt
    assert not isinstance(model, PetlBackbone) and "missing ['input_prompt']" in check_petl_surface(model)[0]


# a branch on a backbone's name: name.startswith("mert"), name == "musicfm-msd", "muq" in name, ...
FAMILIES = sorted({name.split("-")[0] for name in BACKBONES})
BRANCH = re.compile(r"""(startswith|endswith)\(\s*\(?\s*["'](?:%s)|(?:==|!=|\bin\b)\s*["'](?:%s)[^"']*["']"""
                    r"""|["'](?:%s)[^"']*["']\s*(?:==|!=|\bin\b)""" % ((("|".join(FAMILIES)),) * 3))


def test_nothing_outside_backbones_branches_on_a_backbone_name():
    """Backbone knowledge lives in backbones/: callers read the spec or the model, never the name."""
    assert BRANCH.search('if name.startswith("mert"):') and BRANCH.search("x = 1 if b == 'musicfm-msd' else 2")
    src = ROOT / "src/musicpetl"
    files = [p for p in src.rglob("*.py") if "backbones" not in p.relative_to(src).parts]
    offenders = []
    for path in sorted(files + list((ROOT / "stages").glob("*.py"))):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders
