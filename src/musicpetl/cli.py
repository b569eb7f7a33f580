"""`musicpetl` console command: parameter tables, the run summary, significance between runs.

    musicpetl params --backbone musicfm-msd --layers 6 [--paper] [--json]
    musicpetl summary
    musicpetl compare <rev-or-exp-or-npz> ... [--alpha 0.05]
    musicpetl export-peft [models/run.safetensors] [out_dir]
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
    print(f"trainable backbone parameters, {args.backbone}, first {layers} layers"
          f" ({'the paper' if args.paper else args.params} settings; the head is not counted)")
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
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"musicpetl {args.cmd}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
