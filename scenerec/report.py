"""A self-contained HTML report of metrics.json: tables and bar charts, no external assets."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and CI
import matplotlib.pyplot as plt

from scenerec.data.io import write_text
from scenerec.tables import HEADLINE_COLUMNS


def collect_rows(
    metrics: Mapping[str, Any], truth: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every evaluated system of a metrics.json as name -> result, in display order."""
    rows: dict[str, dict[str, Any]] = {}
    if truth and "oracle" in truth:
        rows["oracle"] = truth["oracle"]
    for key, label in (
        ("oracle_observed_history", "oracle (observed history)"),
        ("oracle_inferred_mixture", "oracle (inferred mixture)"),
    ):
        if truth and key in truth:
            rows[label] = truth[key]
    if "model" in metrics:
        rows["scenerec"] = metrics["model"]
    for section in ("ablations", "baselines"):
        for name, result in metrics.get(section, {}).items():
            rows[name if section == "baselines" else f"ablation:{name}"] = result
    return rows


def write_report(
    metrics: Mapping[str, Any],
    path: Path,
    truth: Mapping[str, Any] | None = None,
    title: str = "scenerec report",
) -> Path:
    """Write `path` (HTML, atomically) and return it."""
    rows = collect_rows(metrics, truth)
    evaluated = {n: r for n, r in rows.items() if "test" in r}
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if "dataset" in metrics:
        parts.append(
            "<p>" + ", ".join(f"{html.escape(k)}: {v:,}" for k, v in metrics["dataset"].items()) + "</p>"
        )
    parts.append("<h2>Test metrics (full ranking over the whole catalogue)</h2>")
    parts.append(_html_table(evaluated))
    parts.append(_figure(_bar_chart(evaluated)))
    model = metrics.get("model", {})
    if "lambda" in model:
        parts.append("<h2>Learned text weight lambda(scene, popularity) = lambda_scene x w_bucket</h2>")
        parts.append(_key_value_table("scene", model["lambda"]["scene"]))
        buckets = {
            f"bucket {k} (least to most popular)": v
            for k, v in enumerate(model["lambda"]["popularity_bucket"])
        }
        parts.append(_key_value_table("popularity bucket", buckets))
    if model.get("item_item", {}).get("scene"):
        item_item = model["item_item"]
        parts.append(
            "<h2>Item-item weight w_ii(scene)</h2><p>How much each scene's ranking leans on the history "
            "read as a set (EASE's B"
            + (
                f", L2 {item_item['l2']:g}, {item_item['neighbors']} neighbours per item"
                if "l2" in item_item
                else ""
            )
            + ") rather than on the sequence parts; calibrated on valid: "
            + html.escape(str(item_item.get("valid_scale", {})))
            + "</p>"
        )
        parts.append(_key_value_table("scene", item_item["scene"]))
    if model.get("tasks", {}).get("conversion_auc") is not None:
        parts.append(
            f"<p>Conversion head AUC on the test targets: {model['tasks']['conversion_auc']:.4f} "
            f"(conversion rate {model['tasks']['conversion_rate']:.3f})</p>"
        )
    if model.get("diversity_curve"):
        parts.append(
            "<h2>Diversity at ranking time: what the predictor's <code>diversity</code> knob trades</h2>"
            "<p>The test lists re-ranked by maximal marginal relevance from the best candidates "
            "(scenerec/diversity.py): relevance of the held-out item against the spread of the lists "
            "(intra-list diversity: pairs in different categories) and the catalogue they cover.</p>"
        )
        parts.append(_curve_table(model["diversity_curve"]))
        parts.append(_figure(_diversity_chart(model["diversity_curve"])))
    if model.get("training", {}).get("epochs"):
        parts.append("<h2>Training</h2>")
        parts.append(_figure(_training_curve(model["training"]["epochs"])))
    skipped = {n: r["skipped"] for n, r in rows.items() if "skipped" in r}
    for name, note in skipped.items():
        parts.append(f"<p><b>{html.escape(name)}</b>: {html.escape(note)}</p>")
    body = "\n".join(parts)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child"
        "{text-align:left}</style></head><body>" + body + "</body></html>\n"
    )
    write_text(page, path)
    return path


def _html_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    slice_names = sorted({s for r in rows.values() for s in r.get("slices", {})})
    header = "".join(
        f"<th>{html.escape(c)}</th>"
        for c in ("model", *HEADLINE_COLUMNS, *(f"{s} ndcg@10" for s in slice_names))
    )
    lines = [f"<table><tr>{header}</tr>"]
    for name, result in rows.items():
        cells = [f"{result['test'].get(c, float('nan')):.4f}" for c in HEADLINE_COLUMNS]
        cells += [
            f"{result.get('slices', {}).get(s, {}).get('ndcg@10', float('nan')):.4f}" for s in slice_names
        ]
        lines.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _key_value_table(title: str, values: Mapping[str, float]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v:.4f}</td></tr>" for k, v in values.items())
    return f"<table><tr><th>{html.escape(title)}</th><th>value</th></tr>{rows}</table>"


DIVERSITY_COLUMNS = ("ndcg@10", "hr@10", "ild@10", "coverage@10")


def _curve_table(curve: list[dict[str, float]]) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ("diversity", *DIVERSITY_COLUMNS))
    lines = [f"<table><tr>{header}</tr>"]
    for row in curve:
        cells = [f"{row['diversity']:g}", *(f"{row.get(c, float('nan')):.4f}" for c in DIVERSITY_COLUMNS)]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _diversity_chart(curve: list[dict[str, float]]) -> plt.Figure:
    """NDCG@10 against intra-list diversity and against coverage, one point per knob value."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, spread in zip(axes, ("ild@10", "coverage@10"), strict=True):
        x, y = [r[spread] for r in curve], [r["ndcg@10"] for r in curve]
        ax.plot(x, y, "o-", color="tab:purple")
        for row, xi, yi in zip(curve, x, y, strict=True):
            ax.annotate(f"d={row['diversity']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel(spread)
        ax.set_ylabel("NDCG@10")
    fig.suptitle("relevance against spread as diversity goes 0 -> 1")
    fig.tight_layout()
    return fig


def _training_curve(epochs: list[dict[str, float]]) -> plt.Figure:
    """The learning curve (train loss, valid metric) and, beside it, the seconds each epoch took."""
    fig, (ax, timing) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 2]})
    x = [e["epoch"] for e in epochs]
    timing.bar(x, [e.get("train_seconds", 0.0) for e in epochs], color="tab:gray")
    timing.set_xlabel("epoch")
    timing.set_ylabel("training seconds")
    losses = [e["loss"] if e["loss"] is not None else float("nan") for e in epochs]  # a warm start's epoch 0
    ax.plot(x, losses, "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    metric = next(k for k in epochs[0] if "@" in k)
    other = ax.twinx()
    other.plot(x, [e[metric] for e in epochs], "s-", color="tab:orange", label=f"valid {metric}")
    other.set_ylabel(f"valid {metric}")
    fig.legend(loc="upper center", ncol=2, fontsize="small")
    fig.tight_layout()
    return fig


def _bar_chart(rows: Mapping[str, Mapping[str, Any]]) -> plt.Figure:
    groups = ["test", *sorted({s for r in rows.values() for s in r.get("slices", {})})]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.8 / max(len(rows), 1)
    for k, (name, result) in enumerate(rows.items()):
        values = [
            result["test"]["ndcg@10"]
            if g == "test"
            else result.get("slices", {}).get(g, {}).get("ndcg@10", 0.0)
            for g in groups
        ]
        ax.bar([g + k * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20)
    ax.set_ylabel("NDCG@10")
    ax.set_title("NDCG@10 overall and per slice")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _figure(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f"<img alt='chart' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
