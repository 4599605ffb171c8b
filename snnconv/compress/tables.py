"""Small writers shared by the methods' own report files (``teas.*``, ``dts.*``, ``seenn*``, ``ttfs.*``)."""
from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def quantity_table(values: dict) -> list[str]:
    """Markdown lines of a two-column table, one row per summary key (floats to 4 significant digits)."""
    return ["| quantity | value |", "|---|---|"] + [f"| {key} | {cell(value)} |" for key, value in values.items()]


def cell(value) -> str:
    """A markdown table cell: floats to 4 significant digits, None as n/a."""
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
