"""`edgeprune reproduce ssl-compression`: the whole study on the tiny profile (a 2-layer, 4-head encoder):
every method's model is really smaller (or really sparse), replays from its checkpoint, is probed, exported and
timed; a second run redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeprune import checkpoint

CLI = [sys.executable, "-m", "edgeprune"]


def _reproduce(tmp, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["reproduce", "ssl-compression", "--profile", "tiny", "--work", str(tmp / "work"),
                                 "--out", str(tmp / "table"), *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ssl")
    first = _reproduce(tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp / "table.json").read_text())
    second = _reproduce(tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, doc, first.stdout, second.stdout


def test_every_method_and_level_is_a_row_with_probes_and_files(tiny_run):
    _, doc, _, _ = tiny_run
    rows = {r["model"]: r for r in doc["rows"]}
    assert set(rows) == {"teacher", "weight-0.5", "heads-l1-1", "heads-l1-2", "heads-data-1", "heads-data-2",
                         "ffn-32", "low-rank-0.5", "distill-teacher-layers", "distill-random"}
    for r in rows.values():
        assert 0 <= r["keyword_accuracy"] <= 1 and 0 <= r["speaker_accuracy"] <= 1 and r["per"] >= 0
        assert np.isfinite(r["ssl_loss"]) and r["passed_fp32"] and r["passed_int8"]
        assert r["zip_kb_int8"] > 0 and r["kb_int8"] < r["kb_fp32"]
    teacher = rows["teacher"]["params"]
    # structured methods really shrink the model; weight pruning keeps every parameter (as zeros)
    assert rows["weight-0.5"]["params"] == teacher
    assert rows["heads-l1-2"]["params"] < rows["heads-l1-1"]["params"] < teacher
    assert rows["heads-data-2"]["params"] == rows["heads-l1-2"]["params"]  # the same number of heads removed
    assert rows["ffn-32"]["params"] < teacher and rows["low-rank-0.5"]["params"] < teacher
    assert rows["distill-random"]["params"] == rows["distill-teacher-layers"]["params"] < teacher
    assert set(doc["latency"]) == set(rows) - {"teacher"}


def test_the_compressed_checkpoints_replay_their_transforms(tiny_run):
    from edgeprune.pruning.sparsity import prunable_params

    tmp, _, _, _ = tiny_run
    models = tmp / "work" / "models"
    kinds = {name: [t.kind for t in checkpoint.load(models / name).transforms]
             for name in ("weight-0.5", "heads-l1-2", "ffn-32", "low-rank-0.5", "distill-teacher-layers")}
    assert kinds == {"weight-0.5": ["sparsity"], "heads-l1-2": ["heads", "heads"], "ffn-32": ["ffn"],
                     "low-rank-0.5": ["low_rank"], "distill-teacher-layers": ["layers"]}
    heads = checkpoint.load(models / "heads-l1-2").model
    assert [layer.attention.num_heads for layer in heads.encoder.layers] == [2, 2]  # 4 heads, one removed twice
    ffn = checkpoint.load(models / "ffn-32").model
    assert [layer.feed_forward.fc1.out_features for layer in ffn.encoder.layers] == [32, 32]
    # the global mask: exactly half of the prunable weights and biases are zero, across all of them together
    sparse = checkpoint.load(models / "weight-0.5").model
    named = dict(sparse.named_parameters())
    values = np.concatenate([named[n].detach().numpy().ravel() for n in prunable_params(sparse)])
    assert (values == 0).sum() == round(0.5 * values.size)


def test_the_table_states_its_claims(tiny_run):
    tmp, doc, _, _ = tiny_run
    text = (tmp / "table.md").read_text()
    assert "## Claims" in text and "latency_over_mac_cut_int8" in text
    claims = [c["claim"] for c in doc["checks"]]
    assert "every exported file passes parity" in claims
    assert any("data-driven metric's PER at or below l1's" in c for c in claims)
    assert any("zipped int8 file" in c for c in claims)
    assert (tmp / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_redoes_nothing(tiny_run):
    _, doc, first, second = tiny_run
    assert "pre-train teacher ..." in first
    assert "..." not in second.replace("done before", "")
    assert second.count("reused") == len(doc["step_seconds"])


def test_bad_requests_are_one_line(tmp_path):
    from edgeprune.errors import EdgepruneError
    from edgeprune.reproduce.ssl_compression import Settings

    proc = _reproduce(tmp_path, "--data", "elsewhere")
    assert proc.returncode == 2 and "ssl-compression runs on the synthetic speech" in proc.stderr
    with pytest.raises(EdgepruneError, match=r"sparsities \[1.0\]"):
        Settings(profile="tiny", sparsities=[1.0])
    with pytest.raises(EdgepruneError, match="head events 4"):
        Settings(profile="tiny", head_events=4)
    with pytest.raises(EdgepruneError, match="distillation objective 'mse'"):
        Settings(profile="tiny", distill_objective="mse")
