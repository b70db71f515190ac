"""Results files for benchmarks/results/: the same rows as JSON and as a Markdown table, with the machine and the
command that produced them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from edgeprune.fileio import atomic_path, write_json, write_text
from edgeprune.tables import markdown_table
from edgeprune.machine import machine_description


def write_result(out: Path, title: str, command: str, method: str, rows: list[dict[str, Any]],
                 columns: Sequence[str], findings: str = "") -> str:
    """Write OUT.json and OUT.md (`findings`, Markdown, after the table); returns the Markdown text."""
    machine = machine_description()
    out = Path(out)
    write_json(out.with_suffix(".json"), {"title": title, "command": command, "method": method,
                                          "machine": machine, "rows": rows}, force=True)
    text = (f"# {title}\n\nMachine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, Python "
            f"{machine['python']}.\nCommand: `{command}` ({method}).\n\n{markdown_table(rows, columns)}\n"
            + (f"\n{findings}\n" if findings else ""))
    write_text(out.with_suffix(".md"), text, force=True)
    return text


def write_stem(stem: Path, doc: dict[str, Any], markdown_text: str, csv_text: str,
               plot: Callable[[dict[str, Any], Path], None]) -> None:
    """A reproduce job's results: STEM.json, STEM.md, STEM.csv and STEM.png, each written atomically."""
    stem = Path(stem)
    write_json(stem.with_name(stem.name + ".json"), doc, force=True)
    write_text(stem.with_name(stem.name + ".md"), markdown_text, force=True)
    write_text(stem.with_name(stem.name + ".csv"), csv_text, force=True)
    plot(doc, stem.with_name(stem.name + ".png"))


def save_png(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(Path(path), force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
