"""`edgeprune reproduce cmc-asp`: the whole path on the tiny profile, resuming with nothing redone, the table's
sections and the claims it checks."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from edgeprune.errors import EdgepruneError

CLI = [sys.executable, "-m", "edgeprune"]


def _reproduce(tmp, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["reproduce", "cmc-asp", "--profile", "tiny", "--work", str(tmp / "work"),
                                 "--out", str(tmp / "table"), *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmc")
    first = _reproduce(tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp / "table.json").read_text())
    second = _reproduce(tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, doc, first.stdout, second.stdout


def test_every_criterion_is_pruned_to_the_same_macs_and_evaluated_three_ways(tiny_run):
    tmp, doc, _, _ = tiny_run
    rows = {r["row"]: r for r in doc["rows"]}
    assert set(rows) == {"parent", "50-cmc_asp", "50-l1", "50-activation_l1", "50-random-r0"}
    pruned = [r for r in rows.values() if r["criterion"] != "unpruned"]
    assert len({r["params"] for r in pruned}) == 1  # the same budget gives the same widths; the channels differ
    for r in pruned:
        assert abs(r["macs_kept"] - 0.5) <= 0.01 and r["params"] < rows["parent"]["params"]
        for drop in ("both", "no_bone", "no_air"):
            assert r[f"si_sdri_{drop}"] is not None and 0 < r[f"stoi_{drop}"] <= 1
        assert r["si_sdri_before"] is not None
        assert r["si_sdri_tflite_fp32"] == pytest.approx(r["si_sdri_both"], abs=1e-3)  # the file is the model
        assert r["kb_tflite_int8"] < r["kb_tflite_fp32"]
        assert r["ms_tflite_int8"] > 0
    # the scores file keeps the three passes and each channel's role
    scores = json.loads((tmp / "work" / "scores" / "cmc_asp.json").read_text())
    layer = scores["layers"]["bone_enc1"]["extra"]
    assert {"E_multi", "E_noisy", "E_bone", "S_noisy", "S_bone", "role"} <= set(layer)
    assert set(layer["role"]) == {"bone"}  # the bone encoder's first conv hears only the bone microphone


def test_the_table_has_its_sections_and_its_claims(tiny_run):
    tmp, doc, _, _ = tiny_run
    text = (tmp / "table.md").read_text()
    for part in ("SI-SDRi no bone", "SI-SDRi no air", "## Half the MACs", "## Claims", "Wall time per step"):
        assert part in text
    claims = {c["claim"]: c for c in doc["checks"]}
    assert claims["every MAC budget met within one percentage point"]["holds"]
    assert "cmc_asp at or above l1 on SI-SDRi at 50 % MACs, both microphones" in claims
    # 64 scoring samples asked; the tiny training split has 40
    assert doc["scoring_cost"]["samples"] == 40 and doc["scoring_cost"]["three_passes_s"] > 0
    assert (tmp / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    argv = shlex.split(doc["command"])
    assert argv[:3] == ["edgeprune", "reproduce", "cmc-asp"] and "--work" in argv


def test_a_second_run_redoes_nothing(tiny_run):
    _, doc, first, second = tiny_run
    assert "train parent ..." in first
    assert "..." not in second.replace("done before", "")
    assert second.count("reused") == len(doc["step_seconds"])


def test_bad_requests_are_one_line(tmp_path):
    from edgeprune.reproduce import cmc_asp
    from edgeprune.reproduce.cmc_asp import Settings

    proc = _reproduce(tmp_path, "--data", "somewhere")
    assert proc.returncode == 2 and "cmc-asp runs on the synthetic air + bone speech" in proc.stderr
    with pytest.raises(EdgepruneError, match="checkpoint not found"):
        cmc_asp.run(Settings(profile="tiny", checkpoint=str(tmp_path / "none")), tmp_path / "w", progress=False)
    with pytest.raises(EdgepruneError, match="--devices nowhere"):
        cmc_asp.run(Settings(profile="tiny", devices=["nowhere"]), tmp_path / "w2", progress=False)


def test_a_row_whose_fine_tuned_checkpoint_is_gone_is_redone_with_what_took_it_and_nothing_else(tiny_run):
    import re
    import shutil

    tmp, _, _, _ = tiny_run
    shutil.rmtree(tmp / "work" / "finetuned" / "50-l1")
    third = _reproduce(tmp)
    assert third.returncode == 0, third.stderr[-3000:]
    ran = [m.group(1) for m in re.finditer(r"step \d+/\d+ (.+) \.\.\.$", third.stdout, re.M)]
    assert ran == ["fine-tune 50-l1", "export 50-l1", "benchmark on desktop"]
