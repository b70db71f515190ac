"""`edgeprune reproduce cma-fsmc`: the whole study on the tiny profile (a 3-block, 8-channel resnet-kws): every
method at the same MACs cut for each sample count and seed, recovered, replayed from its checkpoint, exported and
timed; a second run redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeprune import checkpoint

CLI = [sys.executable, "-m", "edgeprune"]
METHODS = {"cma-block", "cma-filter", "cma-filter-nomix", "mir", "practise", "l1"}


def _reproduce(tmp, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["reproduce", "cma-fsmc", "--profile", "tiny", "--threads", "1",
                                 "--work", str(tmp / "work"),
                                 "--out", str(tmp / "table"), *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cma")
    first = _reproduce(tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp / "table.json").read_text())
    second = _reproduce(tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, doc, first.stdout, second.stdout


def test_every_method_sample_count_and_seed_is_a_row_at_the_same_macs_cut(tiny_run):
    _, doc, _, _ = tiny_run
    assert {(r["method"], r["samples"], r["seed"]) for r in doc["rows"]} == {
        (m, n, s) for m in METHODS for n in (12, 24) for s in (0, 1)}
    target = doc["plan"]["target"]["macs"]
    for r in doc["rows"]:
        assert 0 <= r["accuracy"] <= 1
        if r["method"] in ("cma-block", "practise", "cma-filter", "cma-filter-nomix"):
            assert abs(r["macs_reduction"] - target) <= 4e-4, r
    assert {(s["method"], s["samples"]) for s in doc["summary"]} == {(m, n) for m in METHODS for n in (12, 24)}
    for path in ("table.md", "table.csv", "table.png"):
        assert (tiny_run[0] / path).stat().st_size > 0


def test_the_blocks_cma_removes_are_those_of_smallest_doc(tiny_run):
    _, doc, _, _ = tiny_run
    for c in doc["choices"].values():
        kept = [b for b in c["doc"] if b not in c["drop"]]
        assert max(c["doc"][b] for b in c["drop"]) <= min(c["doc"][b] for b in kept)


def test_the_recovered_models_replay_their_transforms(tiny_run):
    tmp, doc, _, _ = tiny_run
    models = tmp / "work" / "models"
    block = checkpoint.load(models / "cma-block-12-s0", framework="torch")
    assert len(block.model.block_names) == 3 - doc["settings"]["drop"]
    filt = checkpoint.load(models / "cma-filter-12-s0", framework="torch")
    widths = doc["choices"]["12-s0"]["widths"]
    for layer, w in widths.items():
        block_name, conv = layer.split(".")
        assert getattr(getattr(filt.model, block_name), conv).out_channels == w


def test_each_method_is_exported_with_parity_and_timed_against_the_parent(tiny_run):
    _, doc, _, _ = tiny_run
    assert {e["model"] for e in doc["edge"]} == {"parent"} | {f"{m}-12-s0" for m in METHODS}
    for e in doc["edge"]:
        assert e["passed_fp32"] and "kb_int8" in e
        if e["model"] != "parent" and e.get("passed_int8"):
            assert e["ms_int8"] > 0 and e["parent_ms_int8"] > 0


def test_the_table_states_its_claims(tiny_run):
    tmp, doc, _, _ = tiny_run
    text = (tmp / "table.md").read_text()
    assert "## Claims" in text and "DE search meets the MACs target" in text
    de = next(c for c in doc["checks"] if "DE search" in c["claim"])
    assert de["holds"] is True


def test_a_second_run_redoes_nothing(tiny_run):
    _, doc, first, second = tiny_run
    assert "train parent ..." in first
    assert "..." not in second.replace("done before", "")
    assert second.count("reused") == len(doc["step_seconds"])


def test_bad_requests_are_one_line(tmp_path):
    from edgeprune.errors import EdgepruneError
    from edgeprune.reproduce.cma_fsmc import Settings

    proc = _reproduce(tmp_path, "--samples", "4,8")
    assert proc.returncode == 2 and "fewer than the 12 classes" in proc.stderr
    assert not (tmp_path / "work").exists()
    proc = _reproduce(tmp_path, "--samples", "a,b")
    assert proc.returncode == 2 and "expected comma-separated counts" in proc.stderr
    with pytest.raises(EdgepruneError, match="drop 3"):
        Settings(profile="tiny", drop=3)


def test_the_ray_executor_recovers_the_same_models_as_local(tiny_run, tmp_path):
    """The 24 recoveries run as Ray tasks on 2 CPUs: every result but the timing is the same as in series here."""
    pytest.importorskip("ray", reason="the cluster extra (make test installs it)")
    from edgeprune.reproduce.executor_study import untimed

    tmp, doc, _, _ = tiny_run
    proc = _reproduce(tmp_path, "--executor", "ray", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = json.loads((tmp / "work" / "state.json").read_text())
    ray = json.loads((tmp_path / "work" / "state.json").read_text())
    assert set(local["steps"]) == set(ray["steps"]) and local["settings"] == ray["settings"]
    assert untimed(local, tmp / "work") == untimed(ray, tmp_path / "work")
    untimed_rows = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert untimed_rows(json.loads((tmp_path / "table.json").read_text())["rows"]) == untimed_rows(doc["rows"])
