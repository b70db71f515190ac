"""`edgeprune reproduce comflp`: the whole path on the tiny profile (a 4-layer encoder, K=2), resuming with nothing
redone, the table's sections and the claims it checks, and bad requests."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from edgeprune.errors import EdgepruneError

CLI = [sys.executable, "-m", "edgeprune"]


def _reproduce(tmp, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["reproduce", "comflp", "--profile", "tiny", "--work", str(tmp / "work"),
                                 "--out", str(tmp / "table"), *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comflp")
    first = _reproduce(tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp / "table.json").read_text())
    second = _reproduce(tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, doc, first.stdout, second.stdout


def test_every_measure_chooses_a_set_that_is_pruned_and_fine_tuned(tiny_run):
    _, doc, _, _ = tiny_run
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"svcca-U", "svcca-T", "dc", "cka", "bi", "metric-greedy", "random (6 sets)"}
    for name in ("svcca-U", "svcca-T", "dc", "cka", "bi", "metric-greedy"):
        r = rows[name]
        removed = [int(v) for v in r["removed"].strip("{}").split(", ")]
        assert len(removed) == 2 and all(1 <= v <= 4 for v in removed)
        assert 0 <= r["test_per_before"] and 0 <= r["test_per_after"]
    # the search verified its candidates: the selected set has the lowest validation PER among them
    for name in ("svcca-U", "dc"):
        s = doc["rows"][[r["method"] for r in doc["rows"]].index(name)]
        assert s["evaluations"] >= 1 and s["total_s"] >= s["matrix_s"]
    # metric-greedy evaluates N + (N - 1) sets for K = 2 of N = 4
    assert rows["metric-greedy"]["evaluations"] == 4 + 3
    # C(4, 2) = 6 distinct random sets exist: all are drawn
    # every fine-tuned model really has N - K layers and fewer parameters than the parent
    for t in doc["finetuned"].values():
        assert t["layers"] == 2 and t["params"] < doc["parent"]["params"]


def test_matrices_are_symmetric_with_unit_diagonal(tiny_run):
    _, doc, _, _ = tiny_run
    import numpy as np

    for name, m in doc["matrices"].items():
        a = np.asarray(m["matrix"])
        assert a.shape == (5, 5), name
        np.testing.assert_allclose(a, a.T, atol=1e-6)
        np.testing.assert_allclose(np.diag(a), 1.0, atol=1e-5)


def test_the_table_has_its_sections_and_its_claims(tiny_run):
    tmp, doc, _, _ = tiny_run
    text = (tmp / "table.md").read_text()
    for part in ("## Chosen sets", "## Search time against depth", "## Latency", "## Exported files", "## Claims"):
        assert part in text
    claims = [c["claim"] for c in doc["checks"]]
    assert any("50x faster than metric-greedy" in c for c in claims)
    assert any("within 1 point of metric-greedy" in c for c in claims)
    assert any("every exported file passes parity" in c for c in claims)
    assert set(doc["latency"]) == {"fp32", "int8"} and all(v["pruned_ms"] > 0 for v in doc["latency"].values())
    assert set(doc["scaling"]) == {"parent", "deep"} and doc["scaling"]["deep"]["layers"] == 6
    # K = N / 2 on the deep encoder: 6 + 5 + 4 evaluations for metric-greedy
    assert doc["scaling"]["deep"]["greedy_evaluations"] == 15
    assert (tmp / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    argv = shlex.split(doc["command"])
    assert argv[:3] == ["edgeprune", "reproduce", "comflp"] and "--work" in argv


def test_the_pruned_checkpoint_replays_its_layer_drop(tiny_run):
    tmp, doc, _, _ = tiny_run
    from edgeprune import checkpoint
    from edgeprune.models.encoder import encoder_layers

    label = doc["exported_model"]
    ckpt = checkpoint.load(tmp / "work" / "finetuned" / label)
    assert [t.kind for t in ckpt.transforms] == ["layers"]
    assert len(encoder_layers(ckpt.model)) == 2


def test_a_second_run_redoes_nothing(tiny_run):
    _, doc, first, second = tiny_run
    assert "train parent ..." in first
    assert "..." not in second.replace("done before", "")
    assert second.count("reused") == len(doc["step_seconds"])


def test_bad_requests_are_one_line(tmp_path):
    from edgeprune.reproduce import comflp
    from edgeprune.reproduce.comflp import Settings

    proc = _reproduce(tmp_path, "--remove", "4")
    assert proc.returncode == 2 and "--remove 4: K must be below the parent's 4 layers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _reproduce(tmp_path, "--measures", "pearson")
    assert proc.returncode == 2 and "--measures pearson" in proc.stderr
    with pytest.raises(EdgepruneError, match="checkpoint not found"):
        comflp.run(Settings(profile="tiny", checkpoint=str(tmp_path / "none")), tmp_path / "w", progress=False)
    checkpoint_run = comflp.command_line(Settings(profile="tiny", checkpoint="parent"), tmp_path / "w",
                                         tmp_path / "w" / "comflp")
    assert "--checkpoint parent" in checkpoint_run and "--layers" not in checkpoint_run
    proc = _reproduce(tmp_path, "--checkpoint", str(tmp_path / "none"), "--layers", "6")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--layers 6: the parent's depth when the job trains it; a --checkpoint parent has its own" in proc.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "w").exists()
