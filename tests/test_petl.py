"""Every PETL method on every registered backbone: what trains, what stays frozen, merging, save/load.

The methods x backbones matrix: every registered method (the paper's six, full fine-tuning,
probing and the extra peft tuners) on every toy-size registry entry (mert-tiny, mert-330m-tiny,
musicfm-tiny, muq-tiny: the architectures of every full-size entry, see
test_backbone_protocol.py), with dropout off, CPU, fp32, and no change in petl/ per backbone:
methods reach a backbone only through its PETL surface (backbones/base.py).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from musicpetl.backbones import BACKBONES as REGISTRY
from musicpetl.backbones import build_backbone
from musicpetl.model import PetlModel
from musicpetl.petl import METHODS, apply_method, get_method, prepare_for_inference
from musicpetl.petl.ssf import ScaleShift
from musicpetl.run_io import load_run, save_run

# baselines (spec.baseline) take no PETL method: skipped here, refusals in tests/test_baselines.py
BACKBONES = [name for name, spec in REGISTRY.items() if not spec.pretrained and not spec.baseline]
# `none` (off-the-shelf estimators only) applies to no backbone of the matrix
ALL = [m for m in METHODS if "foundation" in METHODS[m].kinds]
PETL = [m for m in ALL if m not in ("finetune", "probing")]
MERGEABLE = [m for m in ALL if METHODS[m].merge is not None]
# methods whose init is the identity: the adapted model starts as the pre-trained one
IDENTITY_AT_INIT = [m for m in ALL if m not in ("prompt", "prefix", "ssf")]
N_SAMPLES = 9600  # 0.4 s: MERT 29 frames, MusicFM / MuQ 10 frames
SMALL = {"prefix": {"tokens": 4, "hidden": 16}, "prompt": {"tokens": 4}}  # fast variants for the loops


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy-sized ops: extra threads only add contention (and a loaded 2-core box crawls)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bare():
    return {name: build_backbone(name, 6, seed=0, dropout=0.0) for name in BACKBONES}


@pytest.fixture(scope="module")
def wave():
    return 0.1 * torch.randn(4, N_SAMPLES, generator=torch.Generator().manual_seed(1))


def adapted(bare, name, method, cfg=None, seed=0):
    bb = copy.deepcopy(bare[name])
    torch.manual_seed(seed)
    apply_method(bb, method, cfg)
    return bb


def perturb_trainable_(module, scale=0.05, seed=3):
    """Stand-in for training: move every trainable tensor off its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def expected_trainable(bb, method) -> set[int] | None:
    """ids of the parameters a paper method must train (None: checked by name instead)."""
    if method == "prompt":
        return {id(bb.input_prompt.tokens)}
    ids = set()
    for layer in bb.layers:
        if method == "adapter":
            for site in layer.adapter_sites().values():
                ids |= {id(p) for p in site.adapter.parameters()}
            ids |= {id(p) for n in layer.norms().values() for p in n.parameters()}
        elif method == "bitfit":
            ids |= {id(m.bias) for m in layer.linears().values() if getattr(m, "bias", None) is not None}
            ids |= {id(n.bias) for n in layer.norms().values()}
            ids |= {id(p) for p in layer.bitfit_extras().values()}
        elif method == "ssf":
            ids |= {id(p) for m in layer.linears().values() for p in (m.scale, m.shift) if p is not None}
        elif method == "prefix":
            ids |= {id(p) for p in layer.attn.kv_prefix.parameters()}
        else:
            return None
    return ids


PEFT_MARKERS = {"lora": ("lora_A", "lora_B"), "dora": ("lora_A", "lora_B", "lora_magnitude_vector"),
                "ia3": ("ia3_l",), "loha": ("hada_",), "lokr": ("lokr_",)}


# -- the registry ----------------------------------------------------------------------------------

def test_registry_defaults():
    assert METHODS["adapter"].defaults == {"bottleneck": 16}
    assert METHODS["prompt"].defaults == {"tokens": 64}
    assert METHODS["prefix"].defaults == {"tokens": 32, "hidden": 512}
    assert METHODS["bitfit"].defaults == {} and METHODS["ssf"].defaults == {}
    assert METHODS["lora"].defaults == {"rank": 2, "alpha": 2, "dropout": 0.0}
    assert {"dora", "ia3", "loha", "lokr"} <= set(METHODS)
    assert {"bitfit", "ssf", "lora"} <= set(MERGEABLE)
    assert not {"adapter", "prompt", "prefix", "finetune", "probing"} & set(MERGEABLE)


def test_unknown_option_fails_early(bare):
    with pytest.raises(ValueError, match="bottleneck"):
        adapted(bare, "mert-tiny", "adapter", {"bottle_neck": 8})
    with pytest.raises(ValueError, match="unknown petl.method"):
        get_method("lora2")


@pytest.mark.parametrize("method", ["adapter", "prompt", "prefix", "ssf", "lora"])
def test_apply_twice_fails(bare, method):
    bb = adapted(bare, "musicfm-tiny", method)
    with pytest.raises(RuntimeError, match="once"):
        METHODS[method].apply(bb, METHODS[method].defaults)


# -- what trains --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_trainable_set(bare, name, method):
    bb = adapted(bare, name, method)
    train = {id(p) for p in bb.parameters() if p.requires_grad}
    if method == "finetune":
        assert train == {id(p) for p in bb.parameters()}
    elif method == "probing":
        assert not train
    elif method in PEFT_MARKERS:
        names = [n for n, p in bb.named_parameters() if p.requires_grad]
        assert names and all(any(k in n for k in PEFT_MARKERS[method]) for n in names), names[:5]
        # only the used layers' linear maps are touched; the front end never
        assert all(n.startswith("layers.") for n in names)
    else:
        assert train == expected_trainable(bb, method)
    if method != "finetune":
        assert not bb.frontend_trainable()


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_identity_at_init(bare, wave, name, method):
    ref = [h for h in bare[name].eval()(wave)]
    out = adapted(bare, name, method).eval()(wave)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ["prompt", "prefix", "ssf"])
def test_non_identity_methods_change_output(bare, wave, name, method):
    with torch.no_grad():
        ref = bare[name].eval()(wave)[-1]
        out = adapted(bare, name, method).eval()(wave)[-1]
    assert (out - ref).abs().max() > 1e-4


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_hidden_states_keep_the_audio_frames(bare, wave, name, method):
    """Prompt tokens are stripped: every method returns the bare backbone's (B, T, d) per layer."""
    with torch.no_grad():
        ref = bare[name].eval()(wave)
        out = adapted(bare, name, method).eval()(wave)
    assert [h.shape for h in out] == [h.shape for h in ref]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_frontend_runs_without_autograd(bare, wave, name, method):
    """Nothing before the first trainable parameter is differentiated (full fine-tuning aside)."""
    bb = adapted(bare, name, method, SMALL.get(method)).train()
    seen = []
    bb.frontend_modules()[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    out = bb(wave[:2])[-1]
    assert len(seen) == 1
    if method == "finetune":
        assert seen[0].grad_fn is not None
    else:
        assert seen[0].grad_fn is None and not seen[0].requires_grad
        assert out.requires_grad == (method != "probing")


def _step_model(bare, name, method, seed=0):
    bb = adapted(bare, name, method, SMALL.get(method), seed=seed)
    torch.manual_seed(seed)
    return PetlModel(bb, n_out=3, num_layers=6, method=method, head_dropout=0.0)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_only_method_params_change(bare, wave, name, method):
    model = _step_model(bare, name, method).train()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trained_in_backbone = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    y = torch.tensor([0, 1, 2, 0])
    for _ in range(3):  # zero-init factors (LoRA B, adapter up) pass the gradient on from step 2
        opt.zero_grad()
        loss = F.cross_entropy(model(wave), y)
        loss.backward()
        for n, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, n
        opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p.detach(), trainable[n]), f"{n} did not change"
    if method != "finetune":  # every frozen tensor, buffers (BatchNorm statistics) included, is bit-identical
        for k, v in model.backbone.state_dict().items():
            if k not in trained_in_backbone:
                assert torch.equal(v, frozen[k]), f"frozen {k} changed"


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_training_reduces_loss(bare, wave, name, method):
    """40 Adam steps on one fixed batch fit it (method + head).

    Step 3e-3: on the pre-LN toy (mert-330m-tiny) the residual stream is ~0.1 in scale, so biases and
    LayerNorm shifts moved 1e-2 per step (BitFit, adapter's norms, SSF) swamp the input-dependent
    part before the head can use it (BitFit at 1e-2: loss 1.12 -> 0.99 in 20 steps, 0.96 in 40);
    at 3e-3 every method fits every toy backbone (worst: loss x 0.49 after 40 steps)."""
    model = _step_model(bare, name, method).train()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-3 if method == "finetune" else 3e-3)
    y = torch.tensor([0, 1, 2, 0])
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(wave), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


# -- prefix ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
def test_prefix_is_seen_by_every_layer(bare, wave, name):
    bb = adapted(bare, name, "prefix", {"tokens": 4, "hidden": 16}).eval()
    with torch.no_grad():
        ref = bb(wave)
        for i, layer in enumerate(bb.layers):
            k, v = layer.attn.kv_prefix()
            assert k.shape == v.shape == (4, bb.hidden_size)
            emb = layer.attn.kv_prefix.embedding.weight
            saved = emb.clone()
            emb.add_(1.0)
            out = bb(wave)
            emb.copy_(saved)
            for j in range(len(bb.layers)):
                if j < i:
                    torch.testing.assert_close(out[j], ref[j], rtol=0, atol=0)
                else:
                    assert (out[j] - ref[j]).abs().max() > 1e-4, (i, j)


# -- merging --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", MERGEABLE)
def test_merge_matches_unmerged(bare, wave, name, method):
    from peft.tuners.tuners_utils import BaseTunerLayer

    bb = adapted(bare, name, method).eval()
    perturb_trainable_(bb)
    with torch.no_grad():
        ref = bb(wave)
        merged = prepare_for_inference(bb, method)
        out = merged(wave)
    for a, b in zip(out, ref):
        assert (a - b).abs().max().item() <= 1e-5
    assert not any(isinstance(m, (ScaleShift, BaseTunerLayer)) for m in merged.modules())
    assert not hasattr(merged, "peft_config")
    # a plain backbone again: the same parameter names and shapes as the bare one
    assert {k: v.shape for k, v in merged.state_dict().items()} == \
        {k: v.shape for k, v in bare[name].state_dict().items()}


@pytest.mark.parametrize("method", ["finetune", "probing", "adapter", "prompt", "prefix"])
def test_prepare_for_inference_leaves_the_rest(bare, method):
    bb = adapted(bare, "mert-tiny", method)
    assert prepare_for_inference(bb, method) is bb


# -- save / load: re-applying by name + cfg under the same seed restores the same names -----------------

@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", PETL)
def test_trained_state_loads_onto_a_fresh_backbone(bare, wave, name, method):
    a = adapted(bare, name, method, SMALL.get(method), seed=5).eval()
    b = adapted(bare, name, method, SMALL.get(method), seed=5)
    assert [n for n, p in a.named_parameters() if p.requires_grad] == \
        [n for n, p in b.named_parameters() if p.requires_grad]
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # apply is deterministic under torch.manual_seed
    perturb_trainable_(a)
    state = {n: p.detach().clone() for n, p in a.named_parameters() if p.requires_grad}
    c = adapted(bare, name, method, SMALL.get(method), seed=99).eval()  # another init ...
    missing, unexpected = c.load_state_dict(state, strict=False)
    assert not unexpected and set(missing).isdisjoint(state)  # ... overwritten by the saved tensors
    with torch.no_grad():
        torch.testing.assert_close(c(wave)[-1], a(wave)[-1], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["adapter", "prefix", "ssf", "lora"])
def test_a_deep_copy_is_independent(bare, wave, method):
    """Hooks and wrappers follow the copy (complexity counts, evaluation merge copies)."""
    a = adapted(bare, "musicfm-tiny", method, SMALL.get(method)).eval()
    perturb_trainable_(a)
    with torch.no_grad():
        ref = a(wave)[-1]
        b = copy.deepcopy(a)
        perturb_trainable_(b, seed=11)
        assert (b(wave)[-1] - ref).abs().max() > 1e-5
        torch.testing.assert_close(a(wave)[-1], ref, rtol=0, atol=0)


# -- the matrix: train, merge, run file ------------------------------------------------------------

def two_steps(model, loss_of) -> set[str]:
    """Two Adam steps on `loss_of()` (zero-init factors, LoRA B and adapter up, pass the gradient on
    from step 2); the names of the trainable parameters that moved."""
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(2):
        opt.zero_grad()
        loss = loss_of()
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    return {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), start[n])}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_method_trains_merges_and_round_trips_a_run_file(bare, wave, tmp_path, name, method):
    """A training step moves what the method trains; the run file (musicpetl.run_io) holds only
    that plus the head and reloads onto a fresh backbone to the same predictions, bit for bit; the
    merged model (what evaluation runs) predicts the same."""
    model = _step_model(bare, name, method).train()
    y = torch.tensor([0, 1, 2, 0])
    moved = two_steps(model, lambda: F.cross_entropy(model(wave), y))
    assert {n for n in moved if n.startswith("backbone.")} or method == "probing", f"{name} {method}: nothing trained"
    model.eval()
    with torch.no_grad():
        expected = model(wave)
    path = tmp_path / "run.safetensors"
    save_run(path, model, method, SMALL.get(method, {}), name, 6, task_info={"task": "genre", "seed": 0, "checkpoint": ""})
    loaded = load_run(path)
    with torch.no_grad():
        assert torch.equal(loaded(wave), expected)
        loaded.backbone = prepare_for_inference(loaded.backbone, method)
        torch.testing.assert_close(loaded(wave), expected, rtol=0, atol=1e-5)
