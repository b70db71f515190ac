"""Results files for benchmarks/results/: the same rows as JSON and as a Markdown table, with the machine and the
command that produced them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgeprune.fileio import write_json, write_text
from edgeprune.tables import markdown_table
from edgeprune.machine import machine_description


def write_result(out: Path, title: str, command: str, method: str, rows: list[dict[str, Any]],
                 columns: Sequence[str]) -> str:
    """Write OUT.json and OUT.md; returns the Markdown text."""
    machine = machine_description()
    out = Path(out)
    write_json(out.with_suffix(".json"), {"title": title, "command": command, "method": method,
                                          "machine": machine, "rows": rows}, force=True)
    text = (f"# {title}\n\nMachine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, Python "
            f"{machine['python']}.\nCommand: `{command}` ({method}).\n\n{markdown_table(rows, columns)}\n")
    write_text(out.with_suffix(".md"), text, force=True)
    return text
