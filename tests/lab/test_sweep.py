"""The sweep: a tiny grid on the tiny model writes CSV + PNG, survives an interruption and resumes without redoing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.errors import InvalidInput
from flywheel.lab.sweep import SweepSpec, cell_id, load_split, run_sweep
from flywheel.lab.sweep_rows import parse_dims, read_rows
from tests.helpers.factories import quora_pairs

runner = CliRunner()


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    """The first 240 shipped Quora dev pairs (real text, both labels) as a plain JSONL file."""
    return quora_pairs(tmp_path, 240)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_cli_sweep_writes_csv_and_png_then_resumes_without_redoing(
    pairs_file: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep" / "grid.csv"
    args = ["sweep", "--eval", str(pairs_file), "-m", str(tiny_model_path), "--sizes", "20,40"]
    args += ["--dims", "full,16", "--modes", "full,adapter", "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = _csv_rows(out)
    # 2 base rows (one per dim) + 2 sizes x 2 dims x 2 modes.
    assert len(rows) == 2 + 8
    assert {(r["mode"], r["dim"], r["size"]) for r in rows if r["mode"] != "base"} == {
        (m, d, s) for m in ("full", "frozen-dense") for d in ("full", "16") for s in ("20", "40")
    }
    for r in rows:
        assert 0.0 <= float(r["ci_low"]) <= float(r["error_rate"]) <= float(r["ci_high"]) <= 1.0
        assert int(r["n_test"]) > 0 and r["data_key"] == rows[0]["data_key"]
        assert r["embedding_dim"] == ("32" if r["dim"] == "full" else "16")
    trained = [r for r in rows if r["mode"] != "base"]
    assert all(float(r["train_seconds"]) > 0 and int(r["steps"]) >= 1 for r in trained)
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "sweep" / "grid-models").exists()  # cell models are removed once evaluated

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert _csv_rows(out) == rows  # nothing redone: same rows, same finish times


@pytest.mark.slow
def test_interrupted_sweep_keeps_finished_rows_and_resumes(
    pairs_file: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    spec = SweepSpec(
        eval_file=pairs_file, models=[str(tiny_model_path)], sizes=[20, 40], dims=[None], modes=["full"], n_boot=200
    )
    out = tmp_path / "grid.csv"
    seen: list[str] = []

    def stop_after_two(row: dict) -> None:
        seen.append(row["cell_id"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, progress=False, on_row=stop_after_two)
    partial = read_rows(out)
    assert [r["cell_id"] for r in partial] == seen  # base + size 20, both complete rows
    assert [r["mode"] for r in partial] == ["base", "full"]

    redone: list[str] = []
    rows = run_sweep(spec, out, progress=False, on_row=lambda row: redone.append(row["size"]))
    assert redone == [40]  # only the missing cell ran
    assert [r["size"] for r in read_rows(out)] == ["0", "20", "40"]
    assert read_rows(out)[:2] == partial and len(rows) == 3
    first_20 = next(r for r in rows if r["size"] in (20, "20"))
    assert float(first_20["base_error_rate"]) == pytest.approx(float(partial[0]["error_rate"]))


def test_split_is_deterministic_by_query_and_nested(pairs_file: Path) -> None:
    a, b = load_split(SweepSpec(eval_file=pairs_file)), load_split(SweepSpec(eval_file=pairs_file))
    assert a.train == b.train and a.test == b.test and a.data_key == b.data_key
    held = {p.query.casefold() for p in a.calibration + a.test}
    assert not held & {p.query.casefold() for p in a.train}  # a question's pairs stay on one side
    other = load_split(SweepSpec(eval_file=pairs_file, seed=7))
    assert other.data_key != a.data_key


def test_train_file_is_used_whole_and_eval_file_held_out(pairs_file: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(json.dumps({"query": f"q{i}", "document": f"d{i}", "label": i % 2}) + "\n" for i in range(30))
    )
    split = load_split(SweepSpec(eval_file=pairs_file, train_file=train))
    assert len(split.train) == 30
    assert len(split.calibration) + len(split.test) == 240


def test_bad_grid_and_dims_are_one_line_errors(pairs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="bad dim 'half'"):
        parse_dims(["full,half"])
    args = ["sweep", "--eval", str(pairs_file), "--modes", "lora", "--out", str(tmp_path / "x.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "unknown mode 'lora'" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_query_adapter_cells_train_on_cached_base_vectors(pairs_file: Path, minilm_path: str, tmp_path: Path) -> None:
    spec = SweepSpec(
        eval_file=pairs_file, models=[minilm_path], sizes=[60, 120], dims=[None, 128], modes=["query-adapter"]
    )
    rows = run_sweep(spec, tmp_path / "qa.csv", progress=False)
    cells = [r for r in rows if r["mode"] == "query-adapter"]
    assert {(r["dim"], r["size"]) for r in cells} == {(d, s) for d in ("full", 128) for s in (60, 120)}
    for r in cells:
        base = next(b for b in rows if b["mode"] == "base" and b["dim"] == r["dim"])
        assert r["embedding_dim"] == (384 if r["dim"] == "full" else 128)
        assert r["base_error_rate"] == pytest.approx(base["error_rate"])  # paired with the base at the same dim
        assert r["steps"] >= 1 and r["epochs"] == 10 and r["loss"] == "mnrl+bce" and r["train_seconds"] > 0
        assert r["delta_ci_low"] <= r["delta_vs_base"] <= r["delta_ci_high"]
        assert r["delta_vs_base"] == pytest.approx(r["error_rate"] - r["base_error_rate"], abs=0.03)
    assert not (tmp_path / "qa-models").exists()  # nothing written per cell
    assert (tmp_path / "qa.png").read_bytes()[:4] == b"\x89PNG"


def test_symmetric_and_keep_models_reach_the_cells(pairs_file: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    one_way = SweepSpec(eval_file=pairs_file, models=[str(tiny_model_path)], sizes=[40], dims=[None])
    both_ways = SweepSpec(**{**vars(one_way), "symmetric": True})
    data = load_split(one_way)
    for mode in ("full", "frozen-dense"):  # only query-adapter cells train both ways, so only their ids change
        assert cell_id(one_way, data.data_key, "m", mode, None, 40) == cell_id(
            both_ways, data.data_key, "m", mode, None, 40
        )
    assert cell_id(one_way, data.data_key, "m", "query-adapter", None, 40) != cell_id(
        both_ways, data.data_key, "m", "query-adapter", None, 40
    )
    out = tmp_path / "keep.csv"
    args = ["sweep", "--eval", str(pairs_file), "-m", str(tiny_model_path), "--sizes", "20", "--dims", "full"]
    result = runner.invoke(
        app, [*args, "--modes", "full,query-adapter", "--symmetric", "--keep-models", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = _csv_rows(out)
    full = next(r for r in rows if r["mode"] == "full")
    assert (tmp_path / "keep-models" / full["cell_id"] / "meta.json").exists()  # --keep-models kept it
    qa = next(r for r in rows if r["mode"] == "query-adapter")
    assert qa["cell_id"] == cell_id(
        SweepSpec(**{**vars(one_way), "sizes": [20], "symmetric": True}),
        data.data_key,
        str(tiny_model_path),
        "query-adapter",
        None,
        20,
    )
