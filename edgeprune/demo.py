"""`edgeprune demo`: the suite's headline job on the built-in data: the DCASE 2021 1a quantization table
(`edgeprune reproduce dcase-table`) with the quick profile, written under `out/`. Resumable: a second run reuses
every finished step and only rewrites the table."""

from __future__ import annotations

from pathlib import Path

from edgeprune.reproduce.dcase_table import Settings, run


def run_demo(out: Path, profile_name: str = "quick", data_source: str = "synthetic", devices: str = "desktop",
             force: bool = False) -> dict:
    """Run the table job into `out/work`, write `out/dcase_table.{md,csv,json,png}`, print the table."""
    settings = Settings(data=data_source, profile=profile_name,
                        devices=[d.strip() for d in devices.split(",") if d.strip()])
    doc = run(settings, Path(out) / "work", Path(out) / "dcase_table", force=force)
    print("\n" + (Path(out) / "dcase_table.md").read_text())
    return doc
