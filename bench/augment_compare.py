"""Augmentation implementations compared: speed, and whether madmom still hears the new labels.

    PYTHONPATH=src .venv/bin/python bench/augment_compare.py            # 24 synthetic clips of 8 s
    PYTHONPATH=src .venv/bin/python bench/augment_compare.py --quick    # smoke run: 3 clips of 4 s
    PYTHONPATH=src .venv/bin/python bench/augment_compare.py --report run.json   # tables of a --json run

The augment stage (musicpetl.data.augment) pitch-shifts key items by -4..+4 semitones (label:
tonic + n, same mode) and time-stretches tempo items by 0.95/0.975/1.025/1.05 (label: BPM x rate).
Implementations, all with the same STFT (n_fft 2048, hop 512, Hann; librosa's defaults):
  librosa      musicpetl.data.augment.pitch_shift / time_stretch as they stand: librosa.effects
               pitch_shift (phase vocoder, then soxr "HQ" resampling) and time_stretch
  torchaudio   torchaudio.functional.pitch_shift(n_fft=2048, hop_length=512) (phase vocoder, then
               its windowed-sinc resample from int(sr * 2**(n/12)) Hz to sr); time stretch:
               torch.stft -> torchaudio.transforms.TimeStretch -> torch.istft
  torchaudio-q the same phase vocoder (public torch.stft / TimeStretch / istft), then
               torchaudio.functional.resample by the ratio 2**(n/12) as a fraction with denominator
               <= 1000 (pitch error < 0.03 cent). torchaudio's own pitch_shift resamples between
               the integer rates int(sr * 2**(n/12)) and sr, whose gcd is often tiny (1 for +1 and
               +2 semitones at 24 kHz), and its sinc kernel grows with sr / gcd. Its time stretch
               is torchaudio's, so it is listed for pitch shifts only.
torchaudio's pitch_shift default n_fft is 512 (21 ms at 24 kHz); 2048 is used so that all of them
analyse alike and the comparison is between implementations, not settings.

Speed: wall time per second of audio, one clip per call (as augment_items calls them), min and
median over repeats on the first --timing-clips clips (repeats stop after --time-budget seconds
per implementation and transform, after at least one call), after one warm-up call each; torch on
1 thread (numpy's FFT and soxr are single-threaded too).

Agreement (as tests/test_synth.py checks the corpus itself): each transformed clip, peak-limited
like augment's writer, is resampled to 44.1 kHz (madmom's models were trained at that rate) and
given to madmom. Key: CNNKeyRecognitionProcessor -> key_prediction_to_label, scored with
mir_eval.key.weighted_score against the shifted label. Tempo: RNNBeatProcessor ->
TempoEstimationProcessor (comb filter), Acc1 (within 4 %) and Acc2 (also at x2, x1/2, x3, x1/3)
from madmom.evaluation.tempo against the stretched BPM. Acc1's 4 % window cannot tell the +-2.5 %
rates from no change at all, so the tempo rows also give the median of estimate(stretched) /
estimate(original) over the clips, which should equal the rate. The unaugmented clips give the
baseline; "stale" rows score the transformed audio against the untransformed label, to show that
the check notices a label that does not move with the audio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

SHIFTS = (-4, -3, -2, -1, 1, 2, 3, 4)
RATES = (0.95, 0.975, 1.025, 1.05)
IMPLS = ("librosa", "torchaudio", "torchaudio-q")
N_FFT, HOP = 2048, 512
MADMOM_SR = 44100
RATIO_DENOMINATOR = 1000
# torchaudio's pitch_shift takes a batch, and building its resampling kernel (gigabytes for +1
# and +2 semitones at 24 kHz) dominates its time: the agreement pass shifts all clips in one call.
# Batched and per-clip outputs were identical when checked (-4, +3 semitones); the timing pass calls it per clip regardless.
BATCHED = {"torchaudio"}


# ------------------------------------------------------------------------------ implementations

def _ta_stretch(x, rate: float):
    """Phase-vocoder time stretch with torchaudio: (time,) float tensor -> (round(time / rate),)."""
    import torch
    import torchaudio.transforms as T

    window = torch.hann_window(N_FFT)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, window=window, center=True, return_complex=True)
    spec = T.TimeStretch(hop_length=HOP, n_freq=N_FFT // 2 + 1, fixed_rate=rate)(spec)
    return torch.istft(spec, n_fft=N_FFT, hop_length=HOP, window=window, length=int(round(x.shape[-1] / rate)))


def _fix_length(y, n: int):
    import torch

    return y[..., :n] if y.shape[-1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[-1]))


def ta_pitch_shift(wave: np.ndarray, sr: int, n: int) -> np.ndarray:
    import torch
    import torchaudio.functional as F

    y = F.pitch_shift(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), sr, n,
                      n_fft=N_FFT, hop_length=HOP)
    return y.numpy().astype(np.float32)


def ta_time_stretch(wave: np.ndarray, sr: int, rate: float) -> np.ndarray:
    import torch

    return _ta_stretch(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), float(rate)).numpy()


def shift_ratio(n: int) -> Fraction:
    """2**(n/12) as a fraction with a small denominator (so torchaudio's resample kernel stays small)."""
    return Fraction(2.0 ** (n / 12)).limit_denominator(RATIO_DENOMINATOR)


def taq_pitch_shift(wave: np.ndarray, sr: int, n: int) -> np.ndarray:
    import torch
    import torchaudio.functional as F

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    # Stretch to len * 2**(n/12) keeping the pitch, then play it back 2**(n/12) times faster: the
    # length returns and every frequency is multiplied by the ratio.
    ratio = shift_ratio(n)
    y = _ta_stretch(x, 2.0 ** (-n / 12))
    y = F.resample(y, orig_freq=ratio.numerator, new_freq=ratio.denominator)
    return _fix_length(y, x.shape[-1]).numpy().astype(np.float32)


def implementation(name: str):
    """(pitch_shift, time_stretch or None) with augment's signatures: (wave, sr, value) -> wave."""
    if name == "librosa":
        from musicpetl.data import augment

        return augment.pitch_shift, augment.time_stretch
    if name == "torchaudio":
        return ta_pitch_shift, ta_time_stretch
    if name == "torchaudio-q":
        return taq_pitch_shift, None  # its time stretch is torchaudio's
    raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")


# ----------------------------------------------------------------------------------- measuring

def time_calls(fn, waves: list[np.ndarray], sr: int, value, repeats: int, budget_s: float) -> list[float]:
    """Seconds per second of audio of each call; clips interleaved, stop once over budget."""
    out, spent = [], 0.0
    for _ in range(repeats):
        for wave in waves:
            t0 = time.perf_counter()
            fn(wave, sr, value)
            dt = time.perf_counter() - t0
            out.append(dt / (len(wave) / sr))
            spent += dt
            if spent > budget_s:
                return out
    return out


class Madmom:
    def __init__(self):
        from madmom.features.beats import RNNBeatProcessor
        from madmom.features.key import CNNKeyRecognitionProcessor
        from madmom.features.tempo import CombFilterTempoHistogramProcessor, TempoEstimationProcessor

        self.key_proc, self.beat_proc = CNNKeyRecognitionProcessor(), RNNBeatProcessor()
        # Same tempo set-up as tests/test_synth.py (madmom's default comb filter, given explicitly).
        self.tempo_proc = TempoEstimationProcessor(
            method=None, histogram_processor=CombFilterTempoHistogramProcessor(fps=100), fps=100)

    @staticmethod
    def _signal(wave: np.ndarray, sr: int):
        import librosa
        from madmom.audio.signal import Signal

        return Signal(librosa.resample(wave, orig_sr=sr, target_sr=MADMOM_SR), sample_rate=MADMOM_SR)

    def key(self, wave: np.ndarray, sr: int) -> str:
        from madmom.features.key import key_prediction_to_label

        return key_prediction_to_label(self.key_proc(self._signal(wave, sr)))

    def tempi(self, wave: np.ndarray, sr: int) -> np.ndarray:
        return self.tempo_proc(self.beat_proc(self._signal(wave, sr)))


def maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def key_score(reference: str, estimate: str) -> float:
    import mir_eval

    return float(mir_eval.key.weighted_score(reference, estimate))


def tempo_acc(tempi: np.ndarray, bpm: float) -> tuple[float, float]:
    from madmom.evaluation.tempo import TempoEvaluation

    ev = TempoEvaluation(tempi, [[bpm, 1.0]])
    return float(ev.acc1), float(ev.acc2)


def peak_limit(wave: np.ndarray) -> np.ndarray:
    from musicpetl.data.augment import PEAK_LIMIT

    peak = float(np.max(np.abs(wave)))
    return wave * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else wave


# -------------------------------------------------------------------------------------- report

def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    def fmt(v: float) -> str:
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"

    return f"{fmt(1e3 * min(values))} / {fmt(1e3 * statistics.median(values))}"


def _paired(res: dict, ref: str, other: str, variants: list[str], metric: str) -> str:
    """(clip, transform) pairs where `other` scores higher / lower than `ref`."""
    a = np.concatenate([res["agree"][ref][v][metric] for v in variants])
    b = np.concatenate([res["agree"][other][v][metric] for v in variants])
    return f"{int((b > a).sum())} / {int((b < a).sum())} of {a.size}"


def tables(res: dict) -> str:
    impls, shifts, rates = res["impls"], res["shifts"], res["rates"]
    ts_impls = [i for i in impls if res["time"][i].get(f"ts{rates[0]}") is not None]
    lines = ["Wall time, ms per second of audio (min / median over calls):", "",
             "| transform | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for n in shifts:
        lines.append(f"| pitch {n:+d} | " + " | ".join(_ms(res["time"][i][f"ps{n}"]) for i in impls) + " |")
    for r in rates:
        lines.append(f"| stretch {r} | " + " | ".join(
            _ms(res["time"][i][f"ts{r}"]) if i in ts_impls else "= torchaudio" for i in impls) + " |")
    all_ps = {i: [v for n in shifts for v in res["time"][i][f"ps{n}"]] for i in impls}
    all_ts = {i: [v for r in rates for v in res["time"][i][f"ts{r}"]] for i in ts_impls}
    lines.append("| pitch, all | " + " | ".join(_ms(all_ps[i]) for i in impls) + " |")
    lines.append("| stretch, all | " + " | ".join(_ms(all_ts[i]) if i in ts_impls else "= torchaudio"
                                                  for i in impls) + " |")

    n_clips = len(res["clips"])
    lines += ["", f"madmom key: mean MIREX weighted score vs the shifted label ({n_clips} clips per row; "
                  "stale: vs the unshifted label):", "",
              "| shift | " + " | ".join(impls) + " | stale (" + impls[0] + ") |", "|---|" + "---|" * (len(impls) + 1)]
    base = res["agree"]["baseline"]
    lines.append(f"| none (baseline) | {np.mean(base['key']):.3f}" + " | " * (len(impls) - 1) + " | |")
    for n in shifts:
        cells = [f"{np.mean(res['agree'][i][f'ps{n}']['key']):.3f}" for i in impls]
        stale = np.mean(res["agree"][impls[0]][f"ps{n}"]["key_stale"])
        lines.append(f"| {n:+d} | " + " | ".join(cells) + f" | {stale:.3f} |")
    cells = [f"{np.mean([v for n in shifts for v in res['agree'][i][f'ps{n}']['key']]):.3f}" for i in impls]
    stale = np.mean([v for n in shifts for v in res["agree"][impls[0]][f"ps{n}"]["key_stale"]])
    lines.append("| all shifts | " + " | ".join(cells) + f" | {stale:.3f} |")
    lines.append(f"| pairs scored higher / lower than {impls[0]} | - | " + " | ".join(
        _paired(res, impls[0], i, [f"ps{n}" for n in shifts], "key") for i in impls[1:]) + " | |")

    lines += ["", "madmom tempo vs the stretched BPM: Acc1 / Acc2 / median of estimate(stretched) / "
                  "estimate(original) (stale: Acc1 vs the unstretched BPM):", "",
              "| rate | " + " | ".join(ts_impls) + " | stale Acc1 (" + ts_impls[0] + ") |",
              "|---|" + "---|" * (len(ts_impls) + 1)]
    lines.append(f"| 1 (baseline) | {np.mean(base['acc1']):.3f} / {np.mean(base['acc2']):.3f} / 1"
                 + " | " * (len(ts_impls) - 1) + " | |")
    for r in rates:
        cells = []
        for i in ts_impls:
            a = res["agree"][i][f"ts{r}"]
            cells.append(f"{np.mean(a['acc1']):.3f} / {np.mean(a['acc2']):.3f} / {np.median(a['ratio']):.4f}")
        stale = np.mean(res["agree"][ts_impls[0]][f"ts{r}"]["acc1_stale"])
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {stale:.3f} |")
    cells = []
    for i in ts_impls:
        a1 = [v for r in rates for v in res["agree"][i][f"ts{r}"]["acc1"]]
        a2 = [v for r in rates for v in res["agree"][i][f"ts{r}"]["acc2"]]
        cells.append(f"{np.mean(a1):.3f} / {np.mean(a2):.3f}")
    stale = np.mean([v for r in rates for v in res["agree"][ts_impls[0]][f"ts{r}"]["acc1_stale"]])
    lines.append("| all rates | " + " | ".join(cells) + f" | {stale:.3f} |")
    lines.append(f"| pairs with Acc1 higher / lower than {ts_impls[0]} | - | " + " | ".join(
        _paired(res, ts_impls[0], i, [f"ts{r}" for r in rates], "acc1") for i in ts_impls[1:]) + " | |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- main

def run(args) -> dict:
    import soundfile as sf
    import torch

    from musicpetl.data.augment import shift_key_label, stretch_tempo_label
    from musicpetl.data.synth import generate_corpus, key_name

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="no annotated tempo strengths given")
    shifts, rates, impls = args.shifts, args.rates, args.impls
    res = {"clips": [], "impls": impls, "shifts": shifts, "rates": rates,
           "settings": {k: v for k, v in vars(args).items() if k != "json"},
           "time": {i: {} for i in impls}, "agree": {i: {} for i in impls}}

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = generate_corpus(Path(tmp), args.clips, args.duration, seed=args.seed, progress=False)
        waves = [sf.read(Path(tmp) / r["audio_path"], dtype="float32")[0] for r in rows]
    sr = rows[0]["sr"]
    res["clips"] = [{k: r[k] for k in ("key", "key_label", "tempo", "style")} for r in rows]
    print(f"corpus: {len(rows)} clips of {args.duration} s at {sr} Hz ({time.perf_counter() - t0:.0f} s)", flush=True)

    # Speed first, with nothing else running in this process.
    timing_waves = waves[: args.timing_clips]
    for name in impls:
        ps, ts = implementation(name)
        ps(timing_waves[0][: sr], sr, shifts[0])  # warm-up (imports, FFT plans, caches)
        if ts is not None:
            ts(timing_waves[0][: sr], sr, rates[0])
        for n in shifts:
            res["time"][name][f"ps{n}"] = time_calls(ps, timing_waves, sr, n, args.repeats, args.time_budget)
        for r in rates:
            res["time"][name][f"ts{r}"] = (None if ts is None else
                                           time_calls(ts, timing_waves, sr, r, args.repeats, args.time_budget))
        res.setdefault("peak_rss_mib_after_timing", {})[name] = maxrss_mib()
        print(f"timed {name} (process peak RSS so far {maxrss_mib():.0f} MiB)", flush=True)

    mm = Madmom()
    t0 = time.perf_counter()
    base_tempi = [mm.tempi(w, sr) for w in waves]
    base = {"key": [key_score(key_name(r["key_label"]), mm.key(w, sr)) for r, w in zip(rows, waves)],
            "acc1": [], "acc2": []}
    for r, tempi in zip(rows, base_tempi):
        a1, a2 = tempo_acc(tempi, r["tempo"])
        base["acc1"].append(a1)
        base["acc2"].append(a2)
    res["agree"]["baseline"] = base
    res["baseline_tempo_estimates"] = [float(t[0, 0]) for t in base_tempi]
    print(f"baseline: key {np.mean(base['key']):.3f} Acc1 {np.mean(base['acc1']):.3f} "
          f"Acc2 {np.mean(base['acc2']):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    for name in impls:
        t0 = time.perf_counter()
        ps, ts = implementation(name)
        for n in shifts:
            agree = {"key": [], "key_stale": [], "estimates": []}
            if name in BATCHED:  # one call for all clips (same length): the kernel is built once
                shifted = list(ps(np.stack(waves), sr, n))
            else:
                shifted = [ps(w, sr, n) for w in waves]
            for r, y in zip(rows, shifted):
                est = mm.key(peak_limit(y), sr)
                agree["estimates"].append(est)
                agree["key"].append(key_score(key_name(shift_key_label(r["key_label"], n)), est))
                agree["key_stale"].append(key_score(key_name(r["key_label"]), est))
            res["agree"][name][f"ps{n}"] = agree
        for rate in rates if ts is not None else ():
            agree = {"acc1": [], "acc2": [], "acc1_stale": [], "ratio": [], "estimates": []}
            for r, w, tempi0 in zip(rows, waves, base_tempi):
                tempi = mm.tempi(peak_limit(ts(w, sr, rate)), sr)
                a1, a2 = tempo_acc(tempi, stretch_tempo_label(r["tempo"], rate))
                agree["acc1"].append(a1)
                agree["acc2"].append(a2)
                agree["acc1_stale"].append(tempo_acc(tempi, r["tempo"])[0])
                agree["ratio"].append(float(tempi[0, 0] / tempi0[0, 0]))
                agree["estimates"].append(float(tempi[0, 0]))
            res["agree"][name][f"ts{rate}"] = agree
        print(f"agreement {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--shifts", nargs="+", type=int, default=list(SHIFTS))
    p.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    p.add_argument("--timing-clips", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=10.0,
                   help="seconds of calls per implementation and transform before repeats stop")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 clips of 4 s, shifts -4 +3, rates 0.95 1.05, one repeat")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's --json file")
    args = p.parse_args(argv)
    if args.report:
        print(tables(json.loads(args.report.read_text())))
        return
    if args.quick:
        args.clips, args.duration, args.shifts, args.rates = 3, 4.0, [-4, 3], [0.95, 1.05]
        args.timing_clips, args.repeats = 1, 1
    if "librosa" in args.impls:  # the current implementation first: the "stale" columns use it
        args.impls = ["librosa"] + [i for i in args.impls if i != "librosa"]
    if not any(i != "torchaudio-q" for i in args.impls):
        p.error("torchaudio-q has no time stretch of its own: add librosa or torchaudio to --impls")

    t0 = time.perf_counter()
    res = run(args)
    res["total_s"] = time.perf_counter() - t0
    print()
    print(tables(res))
    print(f"\ntotal {res['total_s']:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
