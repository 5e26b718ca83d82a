"""Metrics as a terminal table: models (and the oracle's ceiling) against the same columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

HEADLINE_COLUMNS: tuple[str, ...] = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "coverage@10", "ild@10")


def metrics_table(rows: Mapping[str, Mapping[str, Any]], title: str = "test metrics (full ranking)") -> Table:
    """One row per model: headline test metrics, cold-item NDCG@10 and NDCG@10 per scene.

    `rows` maps a name to a result with `test` and optional `slices` (or `skipped`).
    """
    scenes = sorted({s for r in rows.values() for s in r.get("slices", {}) if s.startswith("scene:")})
    table = Table(title=title, title_justify="left")
    table.add_column("model", style="bold")
    for column in (*HEADLINE_COLUMNS, "cold ndcg@10", *(f"{s} ndcg@10" for s in scenes)):
        table.add_column(column, justify="right")
    best = max(
        (r["test"]["ndcg@10"] for n, r in rows.items() if "test" in r and not n.startswith("oracle")),
        default=None,
    )
    for name, result in rows.items():
        if "test" not in result:
            table.add_row(name, f"[dim]{result.get('skipped', 'not run')}[/dim]")
            continue
        test, slices = result["test"], result.get("slices", {})
        cells = [_fmt(test.get(c), bold=(c == "ndcg@10" and test.get(c) == best)) for c in HEADLINE_COLUMNS]
        cells.append(_fmt(slices.get("cold_items", {}).get("ndcg@10")))
        cells.extend(_fmt(slices.get(s, {}).get("ndcg@10")) for s in scenes)
        table.add_row(name, *cells)
    return table


def _fmt(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:.4f}"
    return f"[bold green]{text}[/bold green]" if bold else text
