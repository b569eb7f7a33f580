"""Our plain-PyTorch backbones against their references, and the behaviour every caller relies on.

Oracles: transformers' HubertModel (MERT, post-LN and pre-LN "stable layer norm" layouts),
transformers' Wav2Vec2ConformerEncoder with the rotary config (MusicFM's conformer, which MusicFM
itself imports), torchaudio's MelSpectrogram + AmplitudeToDB (MusicFM's front end), a
re-implementation of MusicFM's Conv2dSubsampling written from its public code (minzwon/musicfm
modules/conv.py), and the `muq` package's own `MuQ` model (MuQ). Random weights, fp32, eval mode.
Every norm and bias is randomised first: with the default init (unit weights, zero biases) a
swapped LayerNorm or bias mapping would be invisible.

The helpers here (reference modules, configs, `perturb_`, `hidden_by_hooks`) are imported by
test_checkpoints.py.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
import torchaudio
from torch import nn

from musicpetl.backbones import BACKBONES, build_backbone
from musicpetl.backbones.mert import MERT_330M_TINY, MERT_TINY, MERT_V1_330M, MERT_V1_95M
from musicpetl.backbones.mert_ckpt import mert_official_to_ours
from musicpetl.backbones.musicfm import MUSICFM_MSD, MUSICFM_TINY
from musicpetl.backbones.musicfm_ckpt import COMPUTED, musicfm_official_to_ours
from musicpetl.backbones.muq import MUQ_LARGE, MUQ_TINY
from musicpetl.backbones.muq_ckpt import muq_official_to_ours

transformers = pytest.importorskip("transformers")

# the `muq` package builds its Mel-RVQ with the deprecated torch.nn.utils.weight_norm: its warning, not ours
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

TOL = 1e-4  # max abs diff allowed between us and an oracle (fp32)
SR = 24000
# every toy-size registry entry; baselines (spec.baseline) are not transformers: tests/test_baselines.py
TINY = [name for name, spec in BACKBONES.items() if not spec.pretrained and not spec.baseline]
MERT_CONFIGS = {"mert-tiny": MERT_TINY, "mert-330m-tiny": MERT_330M_TINY, "mert-v1-95m": MERT_V1_95M,
                "mert-v1-330m": MERT_V1_330M}


# -- configs of the oracles ---------------------------------------------------------------------

def hubert_config(cfg=MERT_V1_95M, num_layers: int | None = None):
    """HubertConfig of docs/REFERENCE.md's MERT-v1-95M, of MERT-v1-330M's config.json (do_stable_layer_norm:
    pre-LN layers, encoder LayerNorm after the last layer), or a tiny one with the same switches."""
    config = transformers.HubertConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=num_layers or cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn_dim, hidden_act="gelu",
        conv_dim=list(cfg.conv_dim), conv_kernel=list(cfg.conv_kernel), conv_stride=list(cfg.conv_stride),
        conv_bias=False, feat_extract_norm="group", feat_extract_activation="gelu", feat_proj_layer_norm=True,
        do_stable_layer_norm=cfg.stable_layer_norm, num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups, layer_norm_eps=cfg.layer_norm_eps)
    config._attn_implementation = "eager"  # written-out softmax attention: independent of our SDPA path
    return config


def conformer_config(cfg=MUSICFM_MSD, num_layers: int | None = None):
    """The rotary wav2vec2-conformer config MusicFM builds (facebook/wav2vec2-conformer-rope-large-960h-ft
    with hidden size and depth overridden)."""
    config = transformers.Wav2Vec2ConformerConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=num_layers or cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn_dim, hidden_act="swish",
        conv_depthwise_kernel_size=cfg.depthwise_kernel, position_embeddings_type="rotary",
        rotary_embedding_base=int(cfg.rotary_base), layer_norm_eps=cfg.layer_norm_eps,
        num_conv_pos_embeddings=128 if cfg.hidden_size >= 128 else 16,
        num_conv_pos_embedding_groups=16 if cfg.hidden_size >= 128 else 4)
    # the encoder is used bare (not through from_pretrained): name its attention kernel; eager is
    # what the MusicFM release ran with (softmax(QK^T) V written out), an independent oracle for our SDPA
    config._attn_implementation = "eager"
    return config


# -- MusicFM reference, written from the public code (minzwon/musicfm) ---------------------------

class RefRes2dModule(nn.Module):
    """modules/conv.py Res2dModule."""

    def __init__(self, idim, odim, stride=(2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.relu = nn.ReLU()
        self.diff = False
        if (idim != odim) or (stride[0] > 1):
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)
            self.diff = True

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.diff:
            x = self.bn3(self.conv3(x))
        return self.relu(x + out)


class RefConv2dSubsampling(nn.Module):
    """modules/conv.py Conv2dSubsampling (einops' rearrange spelled out with permute)."""

    def __init__(self, idim, hdim, odim, strides=(2, 2), n_bands=64):
        super().__init__()
        self.conv = nn.Sequential(RefRes2dModule(idim, hdim, (2, strides[0])),
                                  RefRes2dModule(hdim, hdim, (2, strides[1])))
        self.linear = nn.Linear(hdim * n_bands // 2 // 2, odim)

    def forward(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (b, c, f, t)
        x = self.conv(x)
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)  # rearrange "b c f t -> b t (c f)"
        return self.linear(x)


class RefMelSTFT(nn.Module):
    """modules/features.py MelSTFT(is_db=True)."""

    def __init__(self, sample_rate=SR, n_fft=2048, hop_length=240, n_mels=128):
        super().__init__()
        self.mel_stft = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                                                             hop_length=hop_length, n_mels=n_mels)
        self.amplitude_to_db = torchaudio.transforms.AmplitudeToDB()

    def forward(self, waveform):
        return self.amplitude_to_db(self.mel_stft(waveform))


class RefQuantizer(nn.Module):
    """modules/random_quantizer.py RandomProjectionQuantizer: two buffers."""

    def __init__(self, input_dim, codebook_dim, codebook_size):
        super().__init__()
        self.register_buffer("random_projection", torch.randn(input_dim, codebook_dim))
        self.register_buffer("codebook", torch.randn(codebook_size, codebook_dim))


class RefMusicFM25Hz(nn.Module):
    """model/musicfm_25hz.py MusicFM25Hz: the same sub-modules, hence the same state-dict keys,
    and its inference path (`get_predictions`: fp32 mel, last frame dropped, stats, conv, conformer)."""

    def __init__(self, cfg=MUSICFM_MSD, num_layers=None, codebook_dim=16, codebook_size=4096):
        super().__init__()
        self.preprocessor_melspec_2048 = RefMelSTFT(n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels)
        self.quantizer_melspec_2048_0 = RefQuantizer(cfg.n_mels * 4, codebook_dim, codebook_size)
        self.conv = RefConv2dSubsampling(1, cfg.conv_dim, cfg.hidden_size, strides=(2, 2), n_bands=cfg.n_mels)
        self.conformer = transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer.Wav2Vec2ConformerEncoder(
            conformer_config(cfg, num_layers))
        self.linear = nn.Linear(cfg.hidden_size, codebook_size)
        self.cls_token = nn.Parameter(torch.randn(cfg.hidden_size))

    def hidden_states(self, wav, mean, std):
        """hidden_states[1:] of the official `get_predictions`: layers 1..L, the encoder's final
        layer_norm applied after the last one only (transformers 5 no longer returns them from the
        encoder, so forward hooks collect each layer's output)."""
        mel = self.preprocessor_melspec_2048(wav.float())[..., :-1]
        x = self.conv((mel - mean) / std)
        outs, hooks = [], [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
                           for layer in self.conformer.layers]
        try:
            last = self.conformer(x).last_hidden_state
        finally:
            for h in hooks:
                h.remove()
        return outs[:-1] + [last]


# -- MuQ reference: the `muq` package's own model -------------------------------------------------

MSD_MEAN, MSD_STD = 6.768444971712967, 18.417922652295623


def muq_release_config(cfg=MUQ_LARGE, mean: float = MSD_MEAN, std: float = MSD_STD) -> dict:
    """A config.json as the release holds it: every MuQConfig field, `stat` (mel mean/std) and the
    rope-large `w2v2_config` (facebook/wav2vec2-conformer-rope-large-960h-ft's fields, as the MuQ
    recipe's defaults; MuQModel overrides hidden_size / num_hidden_layers with encoder_dim / depth)."""
    w2v2 = {
        "activation_dropout": 0.1, "adapter_kernel_size": 3, "adapter_stride": 2, "add_adapter": False,
        "apply_spec_augment": True, "architectures": ["Wav2Vec2ConformerForCTC"], "attention_dropout": 0.1,
        "bos_token_id": 1, "classifier_proj_size": 256, "codevector_dim": 768, "conformer_conv_dropout": 0.1,
        "contrastive_logits_temperature": 0.1, "conv_bias": True, "conv_depthwise_kernel_size": cfg.depthwise_kernel,
        "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "diversity_loss_weight": 0.1,
        "do_stable_layer_norm": True, "eos_token_id": 2, "feat_extract_activation": "gelu",
        "feat_extract_dropout": 0.0, "feat_extract_norm": "layer", "feat_proj_dropout": 0.1,
        "feat_quantizer_dropout": 0.0, "final_dropout": 0.1, "gradient_checkpointing": False, "hidden_act": "swish",
        "hidden_dropout": 0.1, "hidden_dropout_prob": 0.1, "hidden_size": 1024, "initializer_range": 0.02,
        "intermediate_size": cfg.ffn_dim, "layer_norm_eps": cfg.layer_norm_eps, "layerdrop": 0.0,
        "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0, "mask_time_length": 10,
        "mask_time_min_masks": 2, "mask_time_prob": 0.05, "max_source_positions": 5000,
        "model_type": "wav2vec2-conformer", "num_adapter_layers": 3, "num_attention_heads": cfg.num_heads,
        "num_codevector_groups": 2, "num_codevectors_per_group": 320,
        "num_conv_pos_embedding_groups": 16 if cfg.hidden_size >= 128 else 4,
        "num_conv_pos_embeddings": 128 if cfg.hidden_size >= 128 else 16, "num_feat_extract_layers": 7,
        "num_hidden_layers": 24, "num_negatives": 100, "output_hidden_size": 1024, "pad_token_id": 0,
        "position_embeddings_type": "rotary", "proj_codevector_dim": 768,
        "rotary_embedding_base": int(cfg.rotary_base), "tdnn_dilation": [1, 2, 3, 1, 1],
        "tdnn_dim": [512, 512, 512, 512, 1500], "tdnn_kernel": [5, 3, 3, 1, 1], "torch_dtype": "float32",
        "transformers_version": "4.19.0.dev0", "use_weighted_layer_sum": False, "vocab_size": 32,
        "xvector_output_dim": 512}
    return {"label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "codebook_size": 4096,
            "features": ["melspec_2048"], "hop_length": cfg.hop_length, "n_mels": cfg.n_mels, "conv_dim": cfg.conv_dim,
            "encoder_dim": cfg.hidden_size, "encoder_depth": cfg.num_layers, "mask_hop": 0.4, "mask_prob": 0.6,
            "is_flash": False, "stat": {"melspec_2048_cnt": 14282760192, "melspec_2048_mean": mean,
                                        "melspec_2048_std": std},
            "w2v2_config": w2v2, "use_rvq_target": True, "use_vq_target": False, "use_encodec_target": False,
            "rvq_ckpt_path": None, "recon_loss_ratio": None, "resume_checkpoint": None, "rvq_n_codebooks": 8,
            "rvq_multi_layer_num": 1}


def muq_forward_compat(model) -> None:
    """Let the `muq` package's model (muq 0.1.0, written for transformers 4) run under transformers 5.

    Its EasyDict conformer config lacks the attention-kernel name transformers 5 reads: name it
    (eager, softmax(QK^T)V written out: an oracle independent of our SDPA path). And
    `MuQModel.encoder` reads the conformer's `hidden_states`, which transformers 5's
    Wav2Vec2ConformerEncoder no longer returns: hooks give its output back what transformers 4
    returned (the input after the encoder's dropout, each layer's output, the last one through the
    encoder's layer_norm). Every value is still computed by the package's own modules.
    """
    from transformers.modeling_outputs import BaseModelOutput

    conformer = model.model.conformer
    conformer.config._attn_implementation = "eager"
    seen: dict = {}

    def before(module, args, kwargs):
        seen["input"], seen["layers"] = args[0], []

    def after_layer(module, args, out):
        seen["layers"].append(out[0] if isinstance(out, tuple) else out)

    def after(module, args, kwargs, out):
        if getattr(out, "hidden_states", None) is not None:
            return out
        return BaseModelOutput(last_hidden_state=out.last_hidden_state,
                               hidden_states=(seen["input"], *seen["layers"][:-1], out.last_hidden_state))

    conformer.register_forward_pre_hook(before, with_kwargs=True)
    for layer in conformer.layers:
        layer.register_forward_hook(after_layer)
    conformer.register_forward_hook(after, with_kwargs=True)


def muq_reference(cfg=MUQ_TINY, seed: int = 0, mean: float = MSD_MEAN, std: float = MSD_STD):
    """The `muq` package's MuQ, built offline from a release-shaped config (random weights: nothing is
    fetched), norms and biases randomised, eval mode, runnable under transformers 5."""
    import muq

    torch.manual_seed(seed)
    model = perturb_(muq.MuQ(muq_release_config(cfg, mean, std)), seed).eval()
    muq_forward_compat(model)
    return model


def muq_hidden_states(model, x) -> list[torch.Tensor]:
    """Layers 1..L as the package returns them (`output.hidden_states[1:]`)."""
    return list(model(x, output_hidden_states=True).hidden_states[1:])


# -- helpers ------------------------------------------------------------------------------------

def perturb_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise every norm (affine and running stats) and bias, so that a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)

    def rnd(t, scale):
        return torch.randn(t.shape, generator=g) * scale

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)) and m.weight is not None:
                m.weight.copy_(1 + rnd(m.weight, 0.2))
                m.bias.copy_(rnd(m.bias, 0.2))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(rnd(m.running_mean, 0.2))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(12345)
            elif isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m.bias is not None:
                m.bias.copy_(rnd(m.bias, 0.05))
    return module


def hidden_by_hooks(layers, run) -> list[torch.Tensor]:
    """Outputs of each module in `layers` while `run()` executes."""
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in layers]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return outs


def max_diffs(ours, theirs) -> list[float]:
    assert len(ours) == len(theirs)
    return [(a - b).abs().max().item() for a, b in zip(ours, theirs)]


def audio(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Music-like test signal: a few partials plus noise, amplitude ~0.3."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    f0 = 110 * 2 ** (torch.randint(0, 24, (batch, 1), generator=g) / 12)
    x = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6))
    return 0.2 * x + 0.05 * torch.randn(batch, t.numel(), generator=g)


def hubert_hidden(hf, x, n: int | None = None) -> list[torch.Tensor]:
    """Layers 1..n of HubertModel as `hidden_states[1:]` holds them: each layer's output, the pre-LN
    encoder's closing layer_norm applied to the model's last layer only (its last_hidden_state)."""
    out = {}
    raw = hidden_by_hooks(hf.encoder.layers, lambda: out.setdefault("last", hf(x).last_hidden_state))
    full = raw[:-1] + [out["last"]]
    return full[:n]


def mert_pair(name="mert-tiny", num_layers=None, normalize_input=False, seed=0):
    """(HubertModel, our Mert with the same weights), both eval."""
    cfg = MERT_CONFIGS[name]
    torch.manual_seed(seed)
    hf = perturb_(transformers.HubertModel(hubert_config(cfg)), seed).eval()
    ours = build_backbone(name, num_layers=num_layers, normalize_input=normalize_input).eval()
    ours.load_state_dict(mert_official_to_ours(hf.state_dict(), num_layers, cfg.num_layers, cfg.stable_layer_norm),
                         strict=True)
    return hf, ours


def musicfm_pair(cfg=MUSICFM_TINY, num_layers=None, seed=0):
    """(RefMusicFM25Hz, our MusicFM with the same weights), both eval."""
    torch.manual_seed(seed)
    ref = perturb_(RefMusicFM25Hz(cfg), seed).eval()
    ours = build_backbone("musicfm-tiny" if cfg is MUSICFM_TINY else "musicfm-msd", num_layers=num_layers).eval()
    sd = musicfm_official_to_ours({"model." + k: v for k, v in ref.state_dict().items()}, num_layers)
    own = ours.state_dict()
    sd.update({k: own[k] for k in COMPUTED})
    ours.load_state_dict(sd, strict=True)
    return ref, ours


# -- oracle tests -------------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("name", ["mert-tiny", "mert-330m-tiny"])
def test_mert_tiny_matches_hubert(name):
    """Post-LN (MERT-v1-95M's layout) and pre-LN (MERT-v1-330M's do_stable_layer_norm) at toy size."""
    hf, ours = mert_pair(name, num_layers=None)
    x = audio(1.5, batch=2)
    theirs = hubert_hidden(hf, x)
    # transformers 5 collects hidden states at model level from the layers' outputs: the same tensors,
    # except that the pre-LN model's last one is raw there, while transformers 4 (which MERT's own
    # modeling code was written against, and the model card's `outputs.hidden_states` example ran on)
    # returned it through the encoder's layer_norm, i.e. last_hidden_state: that is ours
    out = hf(x, output_hidden_states=True)
    collected = list(out.hidden_states[1:])
    assert all(torch.equal(a, b) for a, b in zip(theirs[:-1], collected[:-1]))
    assert torch.equal(theirs[-1], out.last_hidden_state)
    diffs = max_diffs(ours(x), theirs)
    assert max(diffs) <= TOL, diffs
    assert ours(x)[0].shape == (2, ours.n_frames(x.shape[1]), MERT_TINY.hidden_size)
    if MERT_CONFIGS[name].stable_layer_norm:  # the closing norm really is applied, after the last layer only
        raw = hidden_by_hooks(hf.encoder.layers, lambda: hf(x))
        assert (raw[-1] - theirs[-1]).abs().max() > 1e-2 and torch.equal(raw[-2], theirs[-2])


@torch.no_grad()
def test_muq_tiny_matches_muq_package():
    """Our MuQ (MusicFM's architecture with MuQ's config) against the `muq` package's MuQ at toy size."""
    ref = muq_reference(MUQ_TINY, seed=2, mean=5.0, std=15.0)
    ours = build_backbone("muq-tiny", num_layers=None).eval()
    sd = muq_official_to_ours(ref.state_dict(), None, MUQ_TINY.num_layers)
    own = ours.state_dict()
    sd.update({k: own[k] for k in COMPUTED})
    ours.load_state_dict(sd, strict=True)
    ours.frontend.mean, ours.frontend.std = 5.0, 15.0
    x = audio(2.0, batch=2)
    theirs = muq_hidden_states(ref, x)
    hs = ours(x)
    assert len(hs) == len(theirs) == MUQ_TINY.num_layers and hs[0].shape[1] == ours.n_frames(x.shape[1])
    diffs = max_diffs(hs, theirs)
    assert max(diffs) <= TOL, diffs


@torch.no_grad()
def test_musicfm_tiny_matches_reference():
    ref, ours = musicfm_pair(num_layers=None)
    x = audio(2.0, batch=2)
    theirs = ref.hidden_states(x, ours.cfg.mel_mean, ours.cfg.mel_std)
    hs = ours(x)
    assert len(hs) == MUSICFM_TINY.num_layers and hs[0].shape[1] == ours.n_frames(x.shape[1])
    diffs = max_diffs(hs, theirs)
    assert max(diffs) <= TOL, diffs


@torch.no_grad()
def test_musicfm_mel_frontend_matches_torchaudio():
    """Full-size front end: MelSpectrogram(2048, hop 240, 128 mels) -> AmplitudeToDB -> stats, last frame dropped."""
    model = build_backbone("musicfm-msd", num_layers=1).eval()
    x = audio(3.0, batch=2)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=2048, hop_length=240, n_mels=128)(x)
    want = (torchaudio.transforms.AmplitudeToDB()(mel)[..., :-1] - MUSICFM_MSD.mel_mean) / MUSICFM_MSD.mel_std
    got = model.frontend(x)
    assert got.shape == (2, 128, 300) and got.dtype == torch.float32
    assert (got - want).abs().max().item() <= 1e-5


@torch.no_grad()
def test_musicfm_conv_subsampling_matches_reference():
    """Full-size 2-D conv subsampling (512 channels, 128 mels -> 1024-d at 25 Hz)."""
    torch.manual_seed(1)
    ref = perturb_(RefConv2dSubsampling(1, 512, 1024, strides=(2, 2), n_bands=128), 1).eval()
    model = build_backbone("musicfm-msd", num_layers=1).eval()
    sd = musicfm_official_to_ours({f"conv.{k}": v for k, v in ref.state_dict().items()})
    model.subsample.load_state_dict({k.removeprefix("subsample."): v for k, v in sd.items()}, strict=True)
    mel = torch.randn(2, 128, 201)
    got, want = model.subsample(mel), ref(mel)
    assert got.shape == want.shape == (2, 51, 1024)
    assert (got - want).abs().max().item() <= TOL


# -- what "layer N" means -----------------------------------------------------------------------

# the toy-size backbones whose encoder closes with a norm after its last layer (MusicFM, MuQ, pre-LN MERT)
FINAL_NORM = ["musicfm-tiny", "muq-tiny", "mert-330m-tiny"]


@torch.no_grad()
@pytest.mark.parametrize("name", TINY)
def test_layer_n_is_the_output_of_layer_n(name):
    """forward(x, L)[N-1] is the hidden state right after layer N; an encoder norm that follows only
    the model's last layer (MusicFM, MuQ: the 12th; pre-LN MERT-v1-330M: the 24th) is applied to that
    layer alone; a truncated model returns the same raw states as the full one and has no final norm."""
    x = audio(1.0)
    full = build_backbone(name, num_layers=None).eval()
    perturb_(full, 3)
    raw = hidden_by_hooks(full.layers, lambda: full(x))
    hs = full(x)
    n = len(full.layers)
    for i in range(n - 1):
        assert torch.equal(hs[i], raw[i]), (name, i)
    has_final = getattr(full, "final_norm", None) is not None
    assert has_final == (name in FINAL_NORM)
    last = full.final_norm(raw[-1]) if has_final else raw[-1]
    assert torch.equal(hs[-1], last)
    if has_final:
        assert not torch.allclose(hs[-1], raw[-1], atol=1e-3)  # the norm really is applied
    short = build_backbone(name, num_layers=3).eval()
    sd = full.state_dict()
    short.load_state_dict({k: v for k, v in sd.items() if k in short.state_dict()}, strict=True)
    assert getattr(short, "final_norm", None) is None
    for a, b in zip(short(x), raw[:3]):
        assert torch.allclose(a, b, atol=1e-6)
    assert len(short(x, 2)) == 2
    with pytest.raises(ValueError, match="num_layers"):
        short(x, 4)


@torch.no_grad()
def test_mert_normalize_input_both_settings():
    """normalize_input=True is the model card's preprocessor (Wav2Vec2FeatureExtractor do_normalize);
    False is what the authors' benchmark code feeds (raw audio). Both run; they differ."""
    assert MERT_V1_95M.normalize_input is True  # the default: the model card's preprocessor
    hf, raw_model = mert_pair("mert-tiny", normalize_input=False)
    norm_model = build_backbone("mert-tiny", num_layers=None, normalize_input=True).eval()
    norm_model.load_state_dict(raw_model.state_dict())
    x = audio(1.0, batch=2) * torch.tensor([[0.3], [2.0]]) + 0.1
    fe = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True)
    x_norm = torch.as_tensor(fe(list(x.numpy()), sampling_rate=SR, return_tensors="np")["input_values"])
    theirs = hidden_by_hooks(hf.encoder.layers, lambda: hf(x_norm))
    assert max(max_diffs(norm_model(x), theirs)) <= TOL
    a, b = raw_model(x), norm_model(x)
    assert all(torch.isfinite(h).all() for h in a + b)
    assert (a[-1] - b[-1]).abs().max().item() > 1e-2


# -- whole tracks ------------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("name", TINY)
def test_features_equal_each_segment_alone(name):
    model = build_backbone(name, num_layers=4).eval()
    seg = 2.0
    x = audio(7.3)[0]  # 3 full segments + a last one aligned to the end
    feats = model.features(x, num_layers=3, segment_seconds=seg, batch_size=3)
    n = int(seg * SR)
    starts = [0, n, 2 * n, x.numel() - n]
    assert feats.shape == (4, 3, model.hidden_size)
    for s, f in zip(starts, feats):
        alone = torch.stack([h.mean(dim=1)[0] for h in model(x[s:s + n][None], 3)])
        assert torch.allclose(f, alone, atol=1e-5), (name, s)
    per_frame = model.features(x, num_layers=3, segment_seconds=seg, batch_size=3, pool=False)
    assert len(per_frame) == 4 and per_frame[0].shape[:2] == (3, model.n_frames(n))


@torch.no_grad()
@pytest.mark.parametrize("name", ["mert-tiny", "musicfm-tiny"])  # one per front end: the batching is base.py's
def test_features_ten_minute_track_in_bounded_batches(name):
    model = build_backbone(name, num_layers=2).eval()
    x = torch.randn(10 * 60 * SR) * 0.1
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    t0 = time.perf_counter()
    feats = model.features(x, num_layers=2, batch_size=4)
    hook.remove()
    n_seg = math.ceil(600 / model.default_segment_seconds)
    assert feats.shape == (n_seg, 2, model.hidden_size) and torch.isfinite(feats).all()
    # never more than batch_size segments of default length in one forward
    assert max(s[0] for s in seen) <= 4 and all(s[1] == model.segment_length() for s in seen)
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
@torch.no_grad()
def test_features_full_size_mert_segment():
    model = build_backbone("mert-v1-95m", num_layers=6).eval()
    feats = model.features(audio(5.0)[0], num_layers=6)
    assert feats.shape == (1, 6, 768) and torch.isfinite(feats).all()


# -- kernels and dtypes -------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.filterwarnings("ignore:.*Profiler clears events:UserWarning")
def test_attention_runs_through_sdpa():
    for name in TINY:
        model = build_backbone(name, num_layers=2).eval()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(audio(0.5))
        ops = {e.key for e in prof.key_averages()}
        assert "aten::scaled_dot_product_attention" in ops, name


@torch.no_grad()
@pytest.mark.parametrize("name", TINY)
def test_bf16_autocast_on_cpu(name):
    model = build_backbone(name, num_layers=None).eval()
    x = audio(2.0)
    ref = model(x)
    dtypes = {}
    hooks = [model.layers[0].attn.q_proj.register_forward_hook(lambda m, i, o: dtypes.__setitem__("q", o.dtype))]
    mel = hasattr(model, "frontend")  # MusicFM, MuQ: the mel front end
    if mel:
        hooks.append(model.frontend.register_forward_hook(lambda m, i, o: dtypes.__setitem__("mel", o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    for h in hooks:
        h.remove()
    assert dtypes["q"] == torch.bfloat16  # autocast is really on inside the layers
    if mel:
        assert dtypes["mel"] == torch.float32  # the mel front end stays fp32 (dB of small powers)
    for a, b in zip(out, ref):
        assert torch.isfinite(a).all()
        rel = ((a.float() - b).norm() / b.norm()).item()
        assert rel < 0.1, (name, rel)


@pytest.mark.parametrize("name", TINY)
def test_same_seed_same_weights(name):
    """The feature cache and a reloaded run must see the very same random backbone."""
    from musicpetl.backbones import build_backbone

    a, b = build_backbone(name, 2, seed=3).state_dict(), build_backbone(name, 2, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_backbone(name, 2, seed=4).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)
