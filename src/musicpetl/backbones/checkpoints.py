"""Official checkpoints -> our backbones, exactly: every key used, dropped by name, or an error.

The generic part, shared by every family; what a family's files look like (names, renames, config
checks) lives in one small mapping module each: `mert_ckpt.py`, `musicfm_ckpt.py`, `muq_ckpt.py`.

- `KeyMap`: a family's rename table (official prefix -> ours, `{n}` a layer index) and the official
  keys inference never reads (regex -> why), used in both directions;
- `load_strict`: one error naming every missing, unexpected and mis-shaped key, else a strict load;
- `read_weights`: safetensors, or `torch.load(weights_only=True)` with only the globals a family
  allow-lists (no `weights_only=False` fallback, ever);
- `check_checksum`: a file under an official name must have the official digest;
- `fetch_official`: the official files from the Hugging Face cache, else the Hub; offline with
  neither, one error saying which files to get, from where, and where to put them;
- `load_pretrained(model, fmt, checkpoint)`: what `load_backbone` calls with the spec's format.

What "layer N" means for every backbone (`Backbone.forward(wave, num_layers)[N - 1]`): the hidden
state right after the N-th layer, i.e. `hidden_states[N]` of the official code. A norm that the
official encoder applies after its *last* layer only (MusicFM's and MuQ's `conformer.layer_norm`,
pre-LN MERT's `encoder.layer_norm`) is part of the last layer's output; a model truncated below its
full depth never applies (nor loads) it.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from musicpetl.errors import MusicPetlError

log = logging.getLogger(__name__)


class CheckpointError(MusicPetlError, RuntimeError):
    """A checkpoint that cannot be loaded exactly, with the file at fault and what to do."""


@dataclass(frozen=True)
class HubSource:
    """Where the official files are: Hugging Face repo, file name -> role (config, weights, stats)."""

    repo: str
    files: dict[str, str]
    note: str  # sizes, for the download message
    licence: str  # of the weights, from the model card

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}"


class CheckpointFormat(Protocol):
    """A family's official file layout (one object per release, held by the backbone's spec)."""

    hub: HubSource

    def resolve(self, path: Path) -> dict[str, Path]:
        """role -> file, from a local folder or file the user gave."""

    def load(self, model: torch.nn.Module, files: dict[str, Path]) -> None:
        """Check and load the files (roles as `resolve` returns them) into `model`, in place."""


# -- key mapping --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _template_regex(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(\d+)"))


def _layer_index(our_key: str) -> int | None:
    m = re.match(r"layers\.(\d+)\.", our_key)
    return int(m.group(1)) if m else None


@dataclass
class Conversion:
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # our names
    source: dict[str, str] = field(default_factory=dict)  # our name -> official name
    dropped: dict[str, str] = field(default_factory=dict)  # official name -> why
    unexpected: list[str] = field(default_factory=list)  # official names matching no rule


@dataclass(frozen=True)
class KeyMap:
    """Official key names <-> ours for one family (and layer layout).

    A key is a prefix from `renames` plus a leaf (weight, bias, running_mean,
    parametrizations.weight.original0, ...) kept as is. `unused` (regex, full match, after the
    wrapper prefix is stripped): official keys inference never reads, dropped by name with the
    reason. `final_norm`: our prefix of a norm that follows the model's last layer only.
    """

    family: str
    renames: tuple[tuple[str, str], ...]
    unused: tuple[tuple[str, str], ...] = ()
    prefixes: tuple[str, ...] = ()  # wrapper prefixes seen around the official keys
    final_norm: str | None = None

    def rename(self, key: str, reverse: bool = False) -> str | None:
        for official, ours in self.renames:
            src, dst = (ours, official) if reverse else (official, ours)
            m = _template_regex(src).match(key)
            if m:
                return (dst.replace("{n}", m.group(1)) if m.groups() else dst) + key[m.end():]
        return None

    def strip_prefix(self, sd: dict) -> dict:
        """Remove a wrapper prefix (the one most keys carry) from every key that has it."""
        for p in self.prefixes:
            if 2 * sum(k.startswith(p) for k in sd) > len(sd):
                return {k.removeprefix(p): v for k, v in sd.items()}
        return dict(sd)

    def convert(self, sd: dict, keep_layers: int | None = None, total_layers: int = 12) -> Conversion:
        """Official state dict (wrapper prefix already stripped) -> ours, with every dropped key and why."""
        out = Conversion()
        truncated = keep_layers is not None and keep_layers < total_layers
        for key, value in sd.items():
            why = next((reason for pat, reason in self.unused if re.fullmatch(pat, key)), None)
            if why:
                out.dropped[key] = why
                continue
            ours = self.rename(key)
            if ours is None:
                out.unexpected.append(key)
                continue
            i = _layer_index(ours)
            if truncated and i is not None and keep_layers <= i < total_layers:
                out.dropped[key] = f"layer {i + 1} > num_layers={keep_layers}"
                continue
            if truncated and self.final_norm and ours.startswith(self.final_norm):
                out.dropped[key] = f"final norm after layer {total_layers}, unused with num_layers={keep_layers}"
                continue
            out.state[ours] = value
            out.source[ours] = key
        return out

    def to_ours(self, sd: dict, keep_layers: int | None = None, total_layers: int = 12) -> dict:
        """Official names -> ours; unexpected keys are an error."""
        conv = self.convert(self.strip_prefix(sd), keep_layers, total_layers)
        if conv.unexpected:
            raise CheckpointError(f"{self.family} state dict: {len(conv.unexpected)} unexpected keys: "
                                  f"{short(conv.unexpected)}")
        return conv.state

    def to_official(self, sd: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in sd.items():
            name = self.rename(k, reverse=True)
            if name is None:
                raise CheckpointError(f"no official name for our {self.family} key {k!r}")
            out[prefix + name] = v
        return out


def short(keys, n: int = 12) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# -- loading ------------------------------------------------------------------------------------

def load_strict(model: torch.nn.Module, conv: Conversion, source: Path, computed=(),
                keymap: KeyMap | None = None) -> None:
    """Strict load with one error listing every missing, unexpected and mis-shaped key.

    `computed`: buffers our model computes itself (kept as built, never read from the file).
    """
    own = model.state_dict()
    state = dict(conv.state)
    for k in computed:
        if k in own:
            state[k] = own[k]

    def official(k: str) -> str:
        name = keymap.rename(k, reverse=True) if keymap else None
        return f"{k} (official {name})" if name else k

    missing = [official(k) for k in own if k not in state]
    unexpected = conv.unexpected + [conv.source[k] for k in state if k not in own]
    shapes = [f"{conv.source.get(k, k)}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{source}: does not fit {getattr(model, 'name', type(model).__name__)} exactly"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {short(shapes)}")
        parts.append("is it the right checkpoint for this backbone and config?")
        raise CheckpointError("; ".join(parts))
    for k, v in state.items():
        if not own[k].is_floating_point() and v.is_floating_point():
            state[k] = v.to(own[k].dtype)  # BatchNorm num_batches_tracked stored as float
    model.load_state_dict(state, strict=True)


def read_torch_file(path: Path, extra_globals=()) -> dict:
    """torch.load with weights_only=True and only `extra_globals` allow-listed; mmap when possible."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(extra_globals)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        why = next((ln.strip().split(" was not")[0] for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise CheckpointError(f"{path}: not loadable with torch.load(weights_only=True) ({why}); "
                              "it needs a pickle global that is not allow-listed, or is not a torch file. "
                              "We do not unpickle arbitrary objects: re-save its state dict with torch.save or "
                              "safetensors") from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({err})") from err


def read_weights(path: Path, extra_globals=()) -> dict:
    """A state dict from a .safetensors file, or a torch file read with weights_only=True."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: cannot read as safetensors ({err})") from err
    return read_torch_file(path, extra_globals)


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 23) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def check_checksum(path: Path, official: dict[str, str], hub: HubSource, algorithm: str = "md5") -> None:
    """A file under an official name must be the official file; another name only gets a warning."""
    path = Path(path)
    want = official.get(path.name)
    if want is None:
        warnings.warn(f"{path}: not an official {hub.repo} file name ({', '.join(official)}); "
                      "loading it without a checksum", stacklevel=3)
        return
    got = file_digest(path, algorithm)
    if got != want:
        raise CheckpointError(f"{path}: {algorithm} {got} is not the official {path.name} ({want}); the file is "
                              f"corrupt, truncated or replaced: download it again from {hub.url}")


def hf_folder_files(path: str | Path, hub: HubSource, weight_names=("model.safetensors", "pytorch_model.bin"),
                    what: str = "checkpoint") -> dict[str, Path]:
    """{"config", "weights"} of a Hugging Face folder, or of the path of its weight file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        weights = path
    else:
        found = [folder / n for n in weight_names if (folder / n).is_file()]
        if not found:
            raise CheckpointError(f"{path}: no {' or '.join(weight_names)} there; a {what} is a Hugging Face "
                                  f"folder ({', '.join(hub.files)} from {hub.url})")
        weights = found[0]
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder}: config.json missing beside {weights.name}; get it from {hub.url}")
    return {"config": config, "weights": weights}


def fetch_official(hub: HubSource, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """role -> the official file, from the Hugging Face cache or the Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    out = {}
    for name, role in hub.files.items():
        try:  # the cache first: no HEAD request (and its retries) when the file is there
            out[role] = Path(hf_hub_download(hub.repo, name, cache_dir=cache_dir, local_files_only=True))
            continue
        except LocalEntryNotFoundError:
            pass
        log.info("downloading %s from %s (%s)", name, hub.url, hub.note)
        try:
            out[role] = Path(hf_hub_download(hub.repo, name, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, TimeoutError) as err:
            urls = " ".join(f"{hub.url}/resolve/main/{f}" for f in hub.files)
            raise CheckpointError(
                f"cannot get {name} of {hub.repo} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                f"No local checkpoint was given and the Hugging Face Hub is unreachable or offline. Download "
                f"{' and '.join(hub.files)} ({hub.note}; weights licence {hub.licence}) from {hub.url}: {urls} "
                f"-- put them in one folder and set backbone.checkpoint to that folder in params.yaml "
                f"(load_backbone(..., checkpoint=FOLDER)), or fill the Hugging Face cache with "
                f"`hf download {hub.repo} {' '.join(hub.files)}` on a machine with network.") from err
    return out


def load_pretrained(model: torch.nn.Module, fmt: CheckpointFormat, checkpoint: str | Path | None = None) -> None:
    """Load the official weights of `fmt` into `model` (possibly truncated), in place.

    `checkpoint`: a local folder or file (what `fmt.resolve` accepts), or None for the official
    files through the Hugging Face cache / Hub. Every key of the file is used, dropped by name, or
    the load fails listing missing and unexpected keys.
    """
    files = fmt.resolve(Path(checkpoint)) if checkpoint else fetch_official(fmt.hub)
    fmt.load(model, files)
