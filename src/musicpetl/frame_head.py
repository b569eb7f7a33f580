"""The head of frame-level tasks (beat tracking): the paper's MLP applied to every frame of the used
layers' hidden states instead of to their time-mean.

It mirrors model.Head (same layer mixing, same `net` layout, so a run file's `head.net.3` is the
output layer either way and `train.layer_input` means the same): [layer mix ->] Linear(d, d) ->
Dropout -> ReLU -> Linear(d, n_out), on every frame. Input: (B, T, d) hidden states of the last used
layer, or (B, L, T, d) of all L used layers, mixed by their mean or by softmax(`layer_weights`)
(zeros at start: the mean). Output: (B, T) logits for one output per frame (beat), else (B, T, n_out).
"""
from __future__ import annotations

import numpy as np
import torch

from musicpetl.model import LAYER_INPUTS, Head  # noqa: F401  (LAYER_INPUTS: re-exported)


class FrameHead(Head):
    """model.Head applied to every frame: (B, T, d) or (B, L, T, d) -> (B, T) logits (one output per
    frame), else (B, T, n_out)."""

    single_layer_dims = 3

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.net(self.mix(hidden))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def stack_layers(hidden: list[torch.Tensor], layer_input: str) -> torch.Tensor:
    """The used layers' hidden states (each (B, T, d)) as FrameHead reads them: the last one alone
    for `layer_input="last"` (no copy of the others), else all stacked to (B, L, T, d)."""
    return hidden[-1] if layer_input == "last" else torch.stack(hidden, dim=1)


def stitch_frames(pieces: list[tuple[int, np.ndarray]], sample_rate: int, frame_rate: float,
                  n_frames: int | None = None) -> np.ndarray:
    """One curve on the track's frame grid (frame k at k / frame_rate) from per-segment curves
    `(start sample, (T,) values)`, in segment order: frame i of a segment starting at sample s is
    frame round(s / sr * fps) + i. Where segments overlap (the last one, aligned to the track's
    end), the earlier one's frames are kept. A backbone returns slightly fewer frames than
    seconds x frame rate (MERT: 374 for 5 s, its convolutions' edges), so a frame or two at each
    boundary of back-to-back segments is covered by none: those are interpolated linearly from
    their neighbours, and no later frame shifts. `n_frames`: the curve's length (default: up to the
    last covered frame)."""
    starts = [int(round(s / sample_rate * frame_rate)) for s, _ in pieces]
    n = int(n_frames) if n_frames is not None else max((i0 + len(a) for i0, (_, a) in zip(starts, pieces)), default=0)
    out = np.full(n, np.nan)
    for i0, (_, acts) in zip(starts, pieces):
        acts = np.asarray(acts, dtype=np.float64)[: max(0, n - i0)]
        window = out[i0:i0 + len(acts)]
        empty = np.isnan(window)
        window[empty] = acts[empty]
    missing = np.isnan(out)
    if missing.any() and not missing.all():
        out[missing] = np.interp(np.flatnonzero(missing), np.flatnonzero(~missing), out[~missing])
    return out
