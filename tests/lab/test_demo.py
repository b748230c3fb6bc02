"""`flywheel demo`: data-dir safety, and a small end-to-end run (tiny model, a slice of the shipped set)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.errors import InvalidInput
from flywheel.lab.demo import (
    DEMO_SETTINGS,
    FULL_FINETUNE_SETTINGS,
    MARKER,
    demo_settings,
    load_world,
    prepare_data_dir,
    table_rows,
)
from flywheel.lab.worlds import load_beir_world

runner = CliRunner()


def test_shipped_world_loads_with_judgements_for_every_query() -> None:
    world = load_world()
    assert len(world.queries) == 3500 and len(world.corpus) == 5500
    relevant = world.relevant
    ids = {d.id for d in world.corpus}
    assert set(world.queries) == set(relevant)
    assert all(docs <= ids for docs in relevant.values())
    assert not set(world.queries) & ids  # a query is never its own answer


def test_data_dir_must_be_new_or_a_previous_demo_with_force(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty and was not made by `flywheel demo`"):
        prepare_data_dir(other, force=True)
    assert (other / "keep.txt").read_text() == "mine"

    demo_dir = tmp_path / "demo"
    prepare_data_dir(demo_dir)
    (demo_dir / "flywheel.duckdb").write_text("old state")
    with pytest.raises(InvalidInput, match="holds a previous demo; pass --force"):
        prepare_data_dir(demo_dir)
    prepare_data_dir(demo_dir, force=True)
    assert sorted(p.name for p in demo_dir.iterdir()) == [MARKER]


def test_demo_settings_yield_to_environment_and_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_HELDOUT_PERCENT", "25")
    settings = demo_settings(tmp_path, train_max_steps=7, cycle_mode="full")
    assert settings.heldout_percent == 25 and settings.train_max_steps == 7
    others = {**DEMO_SETTINGS, **FULL_FINETUNE_SETTINGS}
    others = {k: v for k, v in others.items() if k not in ("heldout_percent", "train_max_steps")}
    assert others and all(getattr(settings, k) == v for k, v in others.items())
    assert len(settings.admin_keys) == 1 and settings.data_dir == tmp_path
    adapter = demo_settings(tmp_path, train_frozen_dense=True)  # frozen-dense keeps its own training defaults
    assert (
        demo_settings(tmp_path, cycle_mode="adapter").train_learning_rate
        != FULL_FINETUNE_SETTINGS["train_learning_rate"]
    )  # ... and so does an adapter cycle
    assert adapter.train_learning_rate is None and adapter.train_max_steps is None


def test_cli_refuses_a_non_empty_folder_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "not made by `flywheel demo`" in result.output and "Traceback" not in result.output


def _slice(folder: Path, n_queries: int, n_fill: int) -> Path:
    """A small BEIR folder cut from the shipped demo set: some queries, their answers, some other questions."""
    world = load_world()
    queries = dict(list(world.queries.items())[:n_queries])
    relevant = {q: world.relevant[q] for q in queries}
    wanted = {d for docs in relevant.values() for d in docs}
    docs = [d for d in world.corpus if d.id in wanted] + [d for d in world.corpus if d.id not in wanted][:n_fill]
    folder.mkdir()
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    qrels = "".join(f"{q}\t{d}\t1\n" for q, ds in relevant.items() for d in sorted(ds))
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


@pytest.mark.slow
def test_demo_end_to_end_on_a_slice(tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command ingests, simulates over HTTP, runs a cycle and prints the table, decision and report."""
    beir = _slice(tmp_path / "beir", n_queries=40, n_fill=40)
    monkeypatch.setenv("FLYWHEEL_TRAIN_MAX_STEPS", "2")
    monkeypatch.setenv("FLYWHEEL_MIN_HELDOUT_PAIRS", "4")
    data = tmp_path / "demo"
    args = ["demo", "--data-dir", str(data), "--beir", str(beir), "--base-model", str(tiny_model_path)]
    result = runner.invoke(app, [*args, "--rounds", "2"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    traffic = len(load_beir_world(beir).traffic_queries)  # the users ask the traffic queries only
    assert 0 < traffic < 40 and f"simulated {2 * traffic} searches" in out, out
    for needle in ("pair error", "nDCG@10, next traffic", "nDCG@10, unseen queries", "decision:", "cycle stages: mine"):
        assert needle in out, out
    # What serves before and after, on check queries the users never asked (judged by their labels).
    check = load_beir_world(beir).check_queries
    assert f"check queries no cycle saw ({len(check)}): nDCG@10" in out and "95% CI of the change" in out, out
    report_line = next(line for line in result.output.splitlines() if line.startswith("report: "))
    html = Path(report_line.removeprefix("report: ").strip())
    assert html.is_file() and html.parent.parent == data / "reports"
    report = json.loads((html.parent / "report.json").read_text())
    assert report["decision"] in ("promoted", "rejected")
    assert report["counts"]["searches"] > 0 and report["counts"]["heldout_pairs"] > 0
    assert len(table_rows(report)) == 3
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_the_online_line_says_what_each_kind_of_test_shows() -> None:
    from flywheel.lab.demo import online_line

    interleave = {"mode": "interleave", "searches": 1200, "wins": 60, "losses": 31, "ties": 9}
    assert online_line({**interleave, "win_share": None, "band": [0.0, 1.0]}) == (
        "1,200 interleaved searches: 60 won, 31 lost, 9 tied"
    )
    line = online_line({**interleave, "win_share": 60 / 91, "band": [0.52, 0.77]})
    assert line.endswith("win share 0.66 [0.52, 0.77]")
    assert online_line({"mode": "shadow", "searches": 50, "top3_changed": 0.18}) == (
        "shadow, 50 searches, top 3 would change for 18%"
    )
