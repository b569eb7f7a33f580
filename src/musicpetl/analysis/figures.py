"""The report's figures (matplotlib, PNG bytes): Figure 2 (time and memory relative to FT), Figure 3
(metric against the number of layers), and the section 5.3 feature-similarity figure (task x method)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

LAYERS_KEY = "backbone.num_layers"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def complexity_figure(results: dict) -> bytes:
    """Grouped bars per method: training step time, inference time and peak training memory, each
    relative to full fine-tuning measured in the same process; one panel per backbone (own scale)."""
    backbones = list(results)
    fig, axes = plt.subplots(len(backbones), 1, figsize=(10, 3.2 * len(backbones)), squeeze=False)
    series = (("step_ratio", "training step"), ("infer_ratio", "inference"), ("peak_ratio", "peak memory (training)"))
    for ax, bb in zip(axes[:, 0], backbones):
        methods = results[bb]["methods"]
        names = method_order(methods)
        width = 0.8 / len(series)
        for j, (key, label) in enumerate(series):
            xs = [i + (j - 1) * width for i in range(len(names))]
            vals = [methods[m].get(key) for m in names]
            bars = ax.bar([x for x, v in zip(xs, vals) if v is not None], [v for v in vals if v is not None],
                          width, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=6.5, padding=1)
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), names)
        meta = results[bb].get("meta", {})
        ax.set_title(f"{bb}: relative to full fine-tuning ({meta.get('device', '?')}, batch {meta.get('batch', '?')} x "
                     f"{meta.get('seconds', '?')} s, {meta.get('num_layers', '?')} layers)", fontsize=9)
        ax.set_ylabel("x FT")
        ax.margins(y=0.15)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _png(fig)


def method_order(names) -> list[str]:
    from musicpetl.petl import METHODS

    order = list(METHODS)
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), m))


def layer_figure(table, column) -> tuple[bytes, list[str]] | None:
    """Figure 3 for one column: metric with its interval against `backbone.num_layers`, one line per
    system, one panel per backbone; runs without a result drawn as x at the bottom, numbered, with
    their reasons returned (for the caption). None when the column has fewer than two layer counts."""
    cells = [c for (r, col), c in table.cells.items() if col == column and any(k == LAYERS_KEY for k, _ in r.setting)]
    layer_values = {dict(c.row.setting)[LAYERS_KEY] for c in cells}
    if len(layer_values) < 2:
        return None
    # one panel per backbone that was run with at least two layer counts
    backbones = [bb for bb in dict.fromkeys(r.backbone for r in table.rows)
                 if len({dict(c.row.setting)[LAYERS_KEY] for c in cells if c.row.backbone == bb}) > 1]
    if not backbones:
        return None
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.2 * len(backbones), 3.6), squeeze=False)
    notes: list[str] = []
    for ax, bb in zip(axes[0], backbones):
        lines: dict[str, list] = {}
        for c in cells:
            if c.row.backbone != bb:
                continue
            rest = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in c.row.setting if k != LAYERS_KEY)
            lines.setdefault(c.row.system + (f" [{rest}]" if rest else ""), []).append(c)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for i, (label, cs) in enumerate(sorted(lines.items())):
            cs = sorted(cs, key=lambda c: dict(c.row.setting)[LAYERS_KEY])
            ok = [c for c in cs if c.value is not None]
            color = f"C{i % 10}"
            if ok:
                xs = [dict(c.row.setting)[LAYERS_KEY] + (i - len(lines) / 2) * 0.06 for c in ok]
                ys = [c.value for c in ok]
                err = [[c.value - c.low for c in ok], [c.high - c.value for c in ok]]
                ax.errorbar(xs, ys, yerr=err, fmt="o-", color=color, capsize=2.5, ms=4, lw=1.2, label=label)
            for c in cs:
                if c.value is None:
                    notes.append(f"{bb} {c.row.system}, {dict(c.row.setting)[LAYERS_KEY]} layers: {c.missing}")
                    x = dict(c.row.setting)[LAYERS_KEY]
                    ax.plot([x], [0.04], marker="x", color=color, ms=8, mew=2, transform=trans, clip_on=False,
                            label=None if ok else f"{label} (no result)")
                    ax.annotate(f"[{len(notes)}]", (x, 0.04), xycoords=trans, xytext=(4, 4),
                                textcoords="offset points", fontsize=7, color=color)
        ax.set_xticks(sorted(layer_values))
        ax.set(xlabel="layers used", ylabel=column.metric, title=f"{bb}: {column.label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig), notes


def similarity_figure(groups: dict[str, dict[str, dict[str, list[float]]]], title: str) -> bytes:
    """Section 5.3: `groups` method -> task -> {measure: per-layer similarity of the trained model's
    test features to the pre-trained ones}; one panel per method, one line per task."""
    methods = list(groups)
    cols = min(4, len(methods))
    nrows = -(-len(methods) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.8 * nrows), squeeze=False, sharey=True)
    tasks = sorted({t for per in groups.values() for t in per})
    styles = {"cka_per_layer": "o-", "cosine_per_layer": "s--"}
    for ax, m in zip(axes.flat, methods):
        for ti, task in enumerate(tasks):
            for measure, values in sorted(groups[m].get(task, {}).items()):
                name = measure.removesuffix("_per_layer")
                ax.plot(range(1, len(values) + 1), values, styles.get(measure, "^:"), color=f"C{ti}", ms=3.5,
                        label=f"{task} ({name})")
        ax.set_title(m, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("layer", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("similarity to pre-trained", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
