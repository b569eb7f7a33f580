"""`musicpetl` console command: parameter tables, the run summary, significance between runs.

    musicpetl params --backbone musicfm-msd --layers 6 [--paper] [--json]
    musicpetl summary
    musicpetl compare <rev-or-exp-or-npz> ... [--alpha 0.05]
    musicpetl export-peft [models/run.safetensors] [out_dir]
    musicpetl predict <audio files or folders> [--run models/run.safetensors] [--out file.csv]
"""
from __future__ import annotations

import argparse
import json
import sys


def _params(args) -> int:
    from musicpetl.analysis.complexity import PAPER_TABLE3, REFERENCE_FT_UNUSED, paper_options, param_table
    from musicpetl.config import load_params

    if args.paper:
        options = paper_options(args.backbone)
    else:
        p = load_params(args.params)
        options = dict(p.petl.options)
    layers = args.layers if args.layers is not None else (6 if args.paper else load_params(args.params).backbone.num_layers)
    table = param_table(args.backbone, layers, options)
    if args.json:
        print(json.dumps({"backbone": args.backbone, "num_layers": layers, "methods": table}))
        return 0
    paper = PAPER_TABLE3.get(args.backbone, {}) if args.paper else {}
    from musicpetl.backbones import BACKBONES

    spec = BACKBONES.get(args.backbone)
    depth = f"a {spec.kind} baseline, whole network" if spec is not None and spec.baseline else f"first {layers} layers"
    print(f"trainable backbone parameters, {args.backbone}, {depth}"
          f" ({'the paper' if args.paper else args.params} settings; the head is not counted)")
    if args.paper and not paper:
        print(f"({args.backbone} is not in the paper's Table 3: computed only, at Table 1's settings)")
    print(f"{'method':<10} {'params':>13} {'% of FT':>8}" + (f" {'Table 3':>13}" if paper else ""))
    full = table.get("finetune") or 1
    for method, n in table.items():
        ref = paper.get(method)
        ref_s = "" if not paper else f" {ref:>13,}" if isinstance(ref, int) else f" {ref or '-':>13}"
        print(f"{method:<10} {n:>13,} {100 * n / full:>7.3f}%{ref_s}")
    unused = REFERENCE_FT_UNUSED.get(args.backbone, {}) if args.paper else {}
    if unused and "finetune" in table:
        print(f"finetune + what the reference code holds but never runs = {table['finetune'] + sum(unused.values()):,}:")
        for what, n in unused.items():
            print(f"  {n:>11,}  {what}")
    return 0


def _summary(args) -> int:
    from musicpetl.report import summary

    print(summary(args.metrics))
    return 0


def _compare(args) -> int:
    from musicpetl.analysis.compare import compare, format_table, read_predictions

    runs = [read_predictions(s) for s in args.runs]
    rows = compare(runs, n_boot=args.bootstrap, alpha=args.alpha, seed=args.seed)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


def _export_peft(args) -> int:
    from musicpetl.run_io import export_peft_adapter

    out = export_peft_adapter(args.run, args.out)
    print(f"peft adapter written to {out}")
    return 0


def _predict(args) -> int:
    from musicpetl.predict import run_predict

    stats = run_predict(args.inputs, run=args.run, out=args.out, device=args.device, batch_size=args.batch_size,
                        threshold=args.threshold, segment_seconds=args.segment_seconds, progress=not args.quiet)
    minutes = stats["audio_seconds"] / 60
    print(f"musicpetl predict: {stats['ok']} of {stats['files']} files predicted, {stats['errors']} with an error "
          f"row; {minutes:.1f} min of audio in {stats['wall_seconds']:.1f} s"
          + (f" ({stats['seconds_per_audio_minute']:.2f} s per minute of audio)" if minutes else "")
          + ("" if args.out == "-" else f"; written to {args.out}"), file=sys.stderr)
    return 0 if stats["ok"] else 1


def _report(args) -> int:
    import shlex

    from musicpetl.analysis.report import make_report

    shown, skip = [], False  # the command as run, less where it read and wrote (no machine paths in the report)
    for a in args.argv:
        if skip or a.split("=")[0] in ("--repo", "--out", "--complexity"):
            skip = not skip and "=" not in a
            continue
        shown.append(a)
    command = "musicpetl " + shlex.join(shown)
    paths = make_report(args.repo, args.out, names=args.experiments, where=args.where, revs=args.rev,
                        all_commits=args.all_commits, n_boot=args.bootstrap, alpha=args.alpha, seed=args.seed,
                        complexity=args.complexity, command=command)
    print("report written: " + ", ".join(str(p) for k, p in paths.items() if k in ("markdown", "html", "json")))
    return 0


def _complexity(args) -> int:
    from musicpetl.analysis.timing import PAPER_METHODS, measure, save
    from musicpetl.config import load_params

    p = load_params(args.params)
    backbone = args.backbone or p.backbone.name
    layers = args.layers or p.backbone.num_layers
    result = measure(backbone, layers, args.methods or PAPER_METHODS, dict(p.petl.options),
                     batch=args.batch or p.train.batch_size, seconds=args.seconds or p.train.crop_seconds,
                     steps=args.steps, forwards=args.forwards, rounds=args.rounds,
                     device=args.device or p.train.device, seed=p.seed,
                     progress=lambda line: print(line, file=sys.stderr))
    save(result, args.out)
    for m, r in result["methods"].items():
        if "error" in r:
            print(f"{m:<9} {r['error']}")
            continue
        peak = "-" if r["peak_ratio"] is None else f"{r['peak_ratio']:.2f}"
        print(f"{m:<9} step x{r['step_ratio']:.2f}  inference x{r['infer_ratio']:.2f}  peak memory x{peak}  (vs finetune)")
    print(f"written to {args.out} ({result['meta']['device']}); `musicpetl report` draws it as Figure 2")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="musicpetl", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("params", help="trainable-parameter table of every PETL method (paper Table 3)")
    pp.add_argument("--backbone", default="musicfm-msd")
    pp.add_argument("--layers", type=int, default=None, help="used layers (default: params.yaml, or 6 with --paper)")
    pp.add_argument("--paper", action="store_true", help="the paper's settings instead of params.yaml")
    pp.add_argument("--params", default="params.yaml")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(fn=_params)
    ps = sub.add_parser("summary", help="the last run's test metrics")
    ps.add_argument("--metrics", default="metrics")
    ps.set_defaults(fn=_summary)
    pc = sub.add_parser("compare", help="bootstrap intervals and paired tests between runs' test predictions")
    pc.add_argument("runs", nargs="+", help="git revisions, DVC experiment names or predictions .npz files")
    pc.add_argument("--bootstrap", type=int, default=1000)
    pc.add_argument("--alpha", type=float, default=0.05)
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--json", action="store_true")
    pc.set_defaults(fn=_compare)
    pe = sub.add_parser("export-peft", help="a LoRA/DoRA run in peft's adapter format")
    pe.add_argument("run", nargs="?", default="models/run.safetensors")
    pe.add_argument("out", nargs="?", default="models/peft_adapter")
    pe.set_defaults(fn=_export_peft)
    pd = sub.add_parser("predict", help="a trained run on new audio files: one CSV row per file (class and "
                        "probabilities / key / BPM / tags / beat times); unreadable files get a row with the error")
    pd.add_argument("inputs", nargs="+", help="audio files and/or folders (searched at any depth)")
    pd.add_argument("--run", default="models/run.safetensors", help="the run file (default: the pipeline's)")
    pd.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    pd.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    pd.add_argument("--batch-size", type=int, default=8, help="segments per forward pass")
    pd.add_argument("--threshold", type=float, default=0.5, help="tagging: tags whose probability reaches this")
    pd.add_argument("--segment-seconds", type=float, default=0.0,
                    help="inference segment length (default 0: the backbone's, as the evaluate stage)")
    pd.add_argument("--quiet", action="store_true", help="no progress bar")
    pd.set_defaults(fn=_predict)
    pr = sub.add_parser("report", help="Table 2 (+ Figures 2, 3, feature similarity) from the repository's "
                        "experiments, under reports/")
    pr.add_argument("experiments", nargs="*", help="experiment names, commit shas/branches or `workspace` "
                    "(default: all that `dvc exp show` lists)")
    pr.add_argument("--where", action="append", metavar="KEY=VALUE",
                    help="only experiments with this param value (repeatable; a,b = either), e.g. backbone.name=mert-tiny")
    pr.add_argument("--rev", action="append", help="baseline commit(s) whose experiments to read (default HEAD)")
    pr.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit")
    pr.add_argument("--repo", default=".")
    pr.add_argument("--out", default=None, help="output folder (default: <repo>/reports)")
    pr.add_argument("--complexity", default=None, help="Figure 2 data (default: <out>/complexity.json, if there)")
    pr.add_argument("--bootstrap", type=int, default=1000)
    pr.add_argument("--alpha", type=float, default=0.05)
    pr.add_argument("--seed", type=int, default=0)
    pr.set_defaults(fn=_report, argv=list(argv) if argv is not None else sys.argv[1:])
    px = sub.add_parser("complexity", help="time and memory of every method relative to finetune, measured in one "
                        "process on this device (Figure 2)")
    px.add_argument("--params", default="params.yaml", help="backbone, layers, batch, crop and method settings")
    px.add_argument("--backbone", default=None)
    px.add_argument("--layers", type=int, default=None)
    px.add_argument("--methods", nargs="+", default=None, help="default: the paper's eight")
    px.add_argument("--batch", type=int, default=None, help="default: train.batch_size")
    px.add_argument("--seconds", type=float, default=None, help="input length (default: train.crop_seconds)")
    px.add_argument("--steps", type=int, default=3, help="timed training steps per method and round")
    px.add_argument("--forwards", type=int, default=3, help="timed inference forwards per method and round")
    px.add_argument("--rounds", type=int, default=2, help="rounds over all methods, order reversed every other")
    px.add_argument("--device", default=None, help="default: train.device")
    px.add_argument("--out", default="reports/complexity.json")
    px.set_defaults(fn=_complexity)
    args = ap.parse_args(argv)
    from musicpetl.errors import MusicPetlError

    try:
        return args.fn(args)
    except MusicPetlError as err:
        print(f"musicpetl {args.cmd}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
