"""PETL training step: the authors' code (suncerock/peft-music, branch `extended`) vs ours, same run.

    PYTHONPATH=src .venv/bin/python bench/authors_step.py PATH/TO/peft-music --methods lora,adapter
    PYTHONPATH=src:PATH/TO/transformers4 .venv/bin/python bench/authors_step.py PATH/TO/peft-music --backbone mert

PATH/TO/peft-music is a checkout of the authors' repository (branch `extended`), given on the
command line. Full size, random weights (speed does not depend on the values), first 6 layers
(their configs' encoder_depth: 6), batch 2 x 5 s of 24 kHz audio, fp32, 2 threads, 10 classes,
cross-entropy, Adam (their configs' optimizer; lr 1e-4), no gradient clipping on either side,
OMP_WAIT_POLICY=PASSIVE (as bench/petl_step.py and bench/scale.py run their workers).

Systems, all in one process, one step of each in turn (order rotated every round), 1 warm-up round,
then --steps rounds; reported: medians and, per round, the time ratio ours / theirs:
  theirs         their MusicFM PETL model: `MusicFM25Hz(..., is_flash=True)` (their mel, conv front
                 end and conformer, models/musicfm_modules/flash_conformer.py), conv and conformer
                 frozen, `musicfm.linear` an Identity, their MLP head `proj`, their PETL modules
                 (models/modules/lora.py LoRALinear / LoRAConv1d at rank 2 on attention, FFNs and
                 pointwise convs; models/modules/adapter.py Wav2Vec2ConformerEncoderLayerAdapter,
                 bottleneck 16, the layers' LayerNorms trained) applied as their LoRAMusicFM /
                 AdapterMusicFM do (models/musicfm.py); the step is their `common_step`
                 (`get_latent(x, layer_ix=6)`, time mean, `proj`) + backward + Adam over
                 `parameters()`, the model in train mode as Lightning's fit loop leaves it.
  ours-audio     our PetlModel (musicfm-msd, same method and sizes) from audio.
  ours-cached    the same model from cached front-end frames (`forward_embedded`; the frames are
                 computed once before the loop: reading them from the HDF5 front-end cache costs
                 0.3 ms a batch, bench/scale.py frontend).

What this needs from their checkout and what it shims (their code is otherwise imported as is):
- their `models/__init__.py` and `models/base.py` import pytorch_lightning and torchmetrics (not in
  our environment): the package is mounted without running its __init__, and their Lightning
  classes' construction and `common_step` are spelled out here (a few lines each, cited above);
- `flash_conformer.py` imports `transformers.deepspeed`, gone in transformers 5: a stub module
  whose `is_deepspeed_zero3_enabled()` returns False (what it returns without DeepSpeed);
- `MusicFM25Hz` reads `Wav2Vec2ConformerConfig.from_pretrained("facebook/wav2vec2-conformer-rope-
  large-960h-ft")` (a download): that call returns the same config built offline from its fields
  (tests/test_backbones.py's `muq_release_config`); the mel statistics file is a temporary JSON.
- their attention forces the flash SDPA kernel through `torch.backends.cuda.sdp_kernel`; on CPU that
  kernel takes no dropout and their step fails ("No available kernel"): without a GPU the context is
  a no-op, and SDPA picks its CPU kernel, as for ours (training with dropout: the math path).

--backbone mert: their MERT (models/backbone/mert.py, models/mert.py) subclasses transformers 4's
Hubert modules and unpacks three values from `HubertAttention`, which returns two in transformers 5.
It runs unmodified on transformers 4.46.3, installed beside (not into) our environment and put first
on the path for this process only (our code does not import transformers):
    .uv/bin/uv pip install --python .venv/bin/python --no-deps --target PATH/TO/transformers4 \
        transformers==4.46.3 tokenizers==0.20.3 huggingface_hub==0.26.5
  theirs         `MERTModel(MERTConfig(...))` as their `MERT.__init__` builds it (mask probabilities 0,
                 `encoder.layers[:6]`, feature extractor + projection + encoder frozen, their MLP head
                 `proj`), then LoRAMERT (LoRALinear rank 2 on q/k/v/out and both FFN denses) or
                 AdapterMERT (HubertEncoderLayerAdapter, bottleneck 16, layer_norm and
                 final_layer_norm trained); step = their `common_step` (`last_hidden_state`, time mean,
                 `proj`). `AutoConfig.from_pretrained("m-a-p/MERT-v1-95M")` (a download) is replaced by
                 their MERTConfig with MERT-v1-95M's architecture (docs/REFERENCE.md "MERT config") and the
                 dropouts ours use (0.1 hidden / attention / activation); layerdrop 0, so both sides run
                 every layer every step. As their code leaves it, transformers' feature encoder makes
                 its output require grad in training, so their backward runs through the frozen CNN to
                 the waveform (docs/REFERENCE.md); their attention is transformers' SDPA class (the
                 default), the math path with dropout on CPU, as ours.
  ours-audio / ours-cached: as for MusicFM, with mert-v1-95m.
"""
from __future__ import annotations

import argparse
import json
import os

# before torch loads libgomp: idle OpenMP threads sleep instead of spinning through their time slice
# (on 2 shared cores the spin makes every 2-thread op wait for a descheduled partner; bench/petl_step.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_OUT = 10
LAYERS = 6


def mount_authors(checkout: Path, backbone: str = "musicfm"):
    """Their `models` package importable as `authors_models`, without its __init__ (Lightning)."""
    import transformers

    models = checkout / "models"
    if not (models / "backbone" / f"{backbone}.py").is_file():
        sys.exit(f"{checkout} does not look like a peft-music checkout (no models/backbone/{backbone}.py)")
    if backbone == "mert" and int(transformers.__version__.split(".")[0]) >= 5:
        sys.exit(f"their MERT needs transformers 4.x (this process has {transformers.__version__} from "
                 f"{Path(transformers.__file__).parent.parent}); see this script's docstring")
    pkg = types.ModuleType("authors_models")
    pkg.__path__ = [str(models)]
    sys.modules["authors_models"] = pkg
    try:
        import transformers.deepspeed  # noqa: F401  (transformers 4)
    except ImportError:
        stub = types.ModuleType("transformers.deepspeed")
        stub.is_deepspeed_zero3_enabled = lambda: False
        sys.modules["transformers.deepspeed"] = stub
        transformers.deepspeed = stub
    import contextlib

    import torch

    # their attention runs inside `torch.backends.cuda.sdp_kernel(enable_math=False, enable_flash=True,
    # enable_mem_efficient=False)`: on a GPU that picks the flash kernel; on CPU the flash kernel
    # takes no dropout, so with dropout_p=0.1 SDPA finds "No available kernel". The context goes:
    # SDPA picks its CPU kernel, as it does for ours (with dropout in training: the math path).
    if not torch.cuda.is_available():
        torch.backends.cuda.sdp_kernel = lambda *a, **kw: contextlib.nullcontext()
    sys.path.insert(0, str(ROOT / "tests"))
    from test_backbones import muq_release_config  # the rope-large w2v2 config fields, offline

    fields = muq_release_config()["w2v2_config"]
    cls = transformers.Wav2Vec2ConformerConfig
    cls.from_pretrained = classmethod(lambda c, name, **kw: c(**fields))


def build_theirs(method: str, stat_path: str):
    """Their LoRAMusicFM / AdapterMusicFM as models/musicfm.py builds them, without Lightning."""
    import torch
    from torch import nn

    from authors_models.backbone.musicfm import MusicFM25Hz
    from authors_models.modules.adapter import Wav2Vec2ConformerEncoderLayerAdapter
    from authors_models.modules.lora import LoRAConv1d, LoRALinear

    class Theirs(nn.Module):
        def __init__(self):
            super().__init__()
            # MusicFM.__init__ (freeze_conv=True, freeze_conformer=True for both PETL classes)
            self.musicfm = MusicFM25Hz(conv_dim=512, encoder_dim=1024, encoder_depth=LAYERS, mask_hop=0.4,
                                       mask_prob=0.6, is_flash=True, stat_path=stat_path, model_path=None)
            for p in self.musicfm.conv.parameters():
                p.requires_grad = False
            for p in self.musicfm.conformer.parameters():
                p.requires_grad = False
            self.musicfm.linear = nn.Identity()
            del self.musicfm.cls_token
            self.proj = nn.Sequential(nn.Linear(1024, 1024), nn.Dropout(0.5), nn.ReLU(), nn.Linear(1024, N_OUT))
            layers = self.musicfm.conformer.layers
            if method == "adapter":  # AdapterMusicFM (bottleneck_dim 16 in their configs)
                for i in range(len(layers)):
                    layer = layers[i]
                    for norm in (layer.self_attn_layer_norm, layer.ffn1_layer_norm, layer.ffn2_layer_norm,
                                 layer.final_layer_norm):
                        norm.requires_grad_(True)
                    layers[i] = Wav2Vec2ConformerEncoderLayerAdapter(layer, 16)
            elif method == "lora":  # LoRAMusicFM.intiailize_lora, rank 2 everywhere (their configs)
                for m in layers:
                    for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
                        setattr(m.self_attn, name, LoRALinear(getattr(m.self_attn, name), 2))
                    for ffn in (m.ffn1, m.ffn2):
                        ffn.intermediate_dense = LoRALinear(ffn.intermediate_dense, 2)
                        ffn.output_dense = LoRALinear(ffn.output_dense, 2)
                    m.conv_module.pointwise_conv1 = LoRAConv1d(m.conv_module.pointwise_conv1, 2)
                    m.conv_module.pointwise_conv2 = LoRAConv1d(m.conv_module.pointwise_conv2, 2)
            else:
                raise SystemExit(f"method {method!r}: this script builds their lora and adapter")

        def forward(self, x):  # common_step: get_latent(x, layer_ix=encoder_depth), time mean, proj
            emb = self.musicfm.get_latent(x, layer_ix=LAYERS)
            return self.proj(emb.mean(dim=1))

    torch.manual_seed(0)
    return Theirs()


def build_theirs_mert(method: str):
    """Their LoRAMERT / AdapterMERT as models/mert.py builds them, without Lightning."""
    import torch
    from torch import nn

    from authors_models.backbone.mert import MERTConfig, MERTModel
    from authors_models.modules.adapter import HubertEncoderLayerAdapter
    from authors_models.modules.lora import LoRALinear
    from musicpetl.backbones.mert import MERT_V1_95M as C

    class Theirs(nn.Module):
        def __init__(self):
            super().__init__()
            # MERT.__init__: AutoConfig of m-a-p/MERT-v1-95M (here built offline), masks off
            config = MERTConfig(
                hidden_size=C.hidden_size, num_hidden_layers=C.num_layers, num_attention_heads=C.num_heads,
                intermediate_size=C.ffn_dim, conv_dim=C.conv_dim, conv_kernel=C.conv_kernel,
                conv_stride=C.conv_stride, num_conv_pos_embeddings=C.num_conv_pos_embeddings,
                num_conv_pos_embedding_groups=C.num_conv_pos_embedding_groups, layer_norm_eps=C.layer_norm_eps,
                hidden_dropout=C.dropout, attention_dropout=C.dropout, activation_dropout=C.dropout,
                feat_proj_dropout=C.dropout, layerdrop=0.0, feat_extract_norm="group", conv_bias=False,
                feat_proj_layer_norm=True, do_stable_layer_norm=False, feature_extractor_cqt=False,
                deepnorm=False, attention_relax=-1.0)
            config.mask_time_prob = 0.0
            config.mask_feature_prob = 0.0
            self.mert = MERTModel(config)
            self.mert.encoder.layers = self.mert.encoder.layers[:LAYERS]
            for module in (self.mert.feature_extractor, self.mert.feature_projection, self.mert.encoder):
                for p in module.parameters():  # freeze_feature=True, freeze_encoder=True
                    p.requires_grad = False
            self.proj = nn.Sequential(nn.Linear(C.hidden_size, C.hidden_size), nn.Dropout(0.5), nn.ReLU(),
                                      nn.Linear(C.hidden_size, N_OUT))
            layers = self.mert.encoder.layers
            if method == "adapter":  # AdapterMERT, bottleneck_dim 16
                for i in range(len(layers)):
                    layer = layers[i]
                    layer.layer_norm.requires_grad_(True)
                    layer.final_layer_norm.requires_grad_(True)
                    layers[i] = HubertEncoderLayerAdapter(layer, 16)
            elif method == "lora":  # LoRAMERT.intiailize_lora, rank 2 on attention and FFN
                for m in layers:
                    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        setattr(m.attention, name, LoRALinear(getattr(m.attention, name), 2))
                    m.feed_forward.intermediate_dense = LoRALinear(m.feed_forward.intermediate_dense, 2)
                    m.feed_forward.output_dense = LoRALinear(m.feed_forward.output_dense, 2)
            else:
                raise SystemExit(f"method {method!r}: this script builds their lora and adapter")

        def forward(self, x):  # common_step: last_hidden_state, aggregate_output_embedding (time mean), proj
            return self.proj(self.mert(x, output_hidden_states=False).last_hidden_state.mean(dim=1))

    torch.manual_seed(0)
    return Theirs()


def build_ours(method: str, name: str):
    from musicpetl.backbones import build_backbone
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method

    backbone = build_backbone(name, num_layers=LAYERS, seed=0)
    apply_method(backbone, method)
    return PetlModel(backbone, N_OUT, LAYERS, method=method)


def run(method: str, args, stat_path: str) -> dict:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 120000, generator=g) - 0.5) * 0.6
    y = torch.tensor([1, 3])
    if args.backbone == "mert":
        theirs, ours = build_theirs_mert(method), build_ours(method, "mert-v1-95m")
    else:
        theirs, ours = build_theirs(method, stat_path), build_ours(method, "musicfm-msd")
    ours.backbone.eval()
    with torch.no_grad():
        frames = ours.backbone.embed(x)  # what the front-end cache holds (eval mode)
    steps = {}
    for name, model, inp, fwd in (("theirs", theirs, x, theirs), ("ours-audio", ours, x, ours),
                                  ("ours-cached", ours, frames, ours.forward_embedded)):
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(model=model, inp=inp, fwd=fwd, opt=opt):
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(fwd(inp), y).backward()
            opt.step()

        steps[name] = step
    trained = {"theirs": sum(p.numel() for p in theirs.parameters() if p.requires_grad),
               "ours": sum(p.numel() for p in ours.parameters() if p.requires_grad)}
    order = list(steps)
    times = {k: [] for k in steps}
    load = [os.getloadavg()[0]]
    for r in range(args.steps + 1):
        for name in order[r % 3:] + order[:r % 3]:
            t0 = time.perf_counter()
            steps[name]()
            if r:  # round 0 is the warm-up (Adam allocates its state)
                times[name].append(time.perf_counter() - t0)
        if r:
            print(f"{method} round {r}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()) + " s",
                  file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])

    def ratio(a, b):
        return statistics.median(u / v for u, v in zip(times[a], times[b]))

    return {"method": method, "median_s": {k: statistics.median(v) for k, v in times.items()}, "times": times,
            "ours_audio_over_theirs": ratio("ours-audio", "theirs"),
            "ours_cached_over_theirs": ratio("ours-cached", "theirs"), "trained_params": trained, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="a checkout of suncerock/peft-music (branch extended)")
    ap.add_argument("--backbone", choices=("musicfm", "mert"), default="musicfm")
    ap.add_argument("--methods", default="lora,adapter")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (after 1 warm-up round)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    mount_authors(args.checkout.resolve(), args.backbone)
    from musicpetl.backbones.musicfm import MSD_MEL_MEAN, MSD_MEL_STD

    with tempfile.TemporaryDirectory() as tmp:
        stat_path = str(Path(tmp) / "msd_stats.json")
        Path(stat_path).write_text(json.dumps({"melspec_2048_mean": MSD_MEL_MEAN, "melspec_2048_std": MSD_MEL_STD}))
        results = [run(m, args, stat_path) for m in args.methods.split(",")]
    name = {"mert": "mert-v1-95m", "musicfm": "musicfm-msd"}[args.backbone]
    print(f"\n{name} (theirs: transformers {transformers.__version__}), {LAYERS} layers, batch 2 x 5 s, fp32, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; {args.steps} rounds after 1 warm-up, one process\n")
    print("| method | theirs (s) | ours, audio (s) | ours, cached front end (s) | ours audio / theirs "
          "| ours cached / theirs | trained params theirs / ours | load (1-min, start-end) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median_s"]
        print(f"| {r['method']} | {m['theirs']:.2f} | {m['ours-audio']:.2f} | {m['ours-cached']:.2f} "
              f"| {r['ours_audio_over_theirs']:.2f} | {r['ours_cached_over_theirs']:.2f} "
              f"| {r['trained_params']['theirs']:,} / {r['trained_params']['ours']:,} "
              f"| {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
