"""The offline commands: train and evaluate a model on pair files, the demo, and the seed experiment's sweep.

They share `app` and the error handling of `flywheel.cli.app` and
never touch a serving data dir, except `demo`, which makes its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flywheel.cli.app import app, basic_logging, console, print_json, run_command
from flywheel.errors import InvalidInput


@app.command()
def train(
    pairs: Annotated[
        Path, typer.Option(help="JSONL(.gz): query,positive[,negative] or question1,question2,is_duplicate.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the model (must not exist or be empty).")],
    base: Annotated[str | None, typer.Option(help="Base model name or path (default: packaged MiniLM).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (default 1; 10 with --query-adapter).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 32; 256 with --query-adapter).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default: the measured best).")] = None,
    dim: Annotated[int | None, typer.Option(help="Output dimension (Matryoshka), e.g. 256.")] = None,
    frozen_dense: Annotated[
        bool,
        typer.Option(
            "--frozen-dense",
            "--adapter",
            help="Freeze the base; train a Dense layer after pooling only (--adapter: its old name).",
        ),
    ] = False,
    query_adapter: Annotated[
        bool,
        typer.Option(
            help="Freeze the base, embed the pairs once and train a query-side linear map on the vectors "
            "(the adapter cycle's kind; `flywheel evaluate` scores the folder)."
        ),
    ] = False,
    symmetric: Annotated[
        bool, typer.Option(help="With --query-adapter: also train each pair the other way round.")
    ] = False,
    max_minutes: Annotated[float | None, typer.Option(help="Stop cleanly after this many minutes.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop cleanly after this many steps.")] = None,
    loss: Annotated[str | None, typer.Option(help="Loss (default: the measured best).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Fine-tune a model on a pair file (the seed experiment's training step, standalone)."""

    def go() -> None:
        from flywheel.learn.finetune import TrainConfig, train_from_file
        from flywheel.util.packaged import packaged_model_path

        given = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "loss": loss}
        given = {k: v for k, v in given.items() if v is not None}
        if query_adapter:
            unused = {"--dim": dim, "--frozen-dense": frozen_dense or None, "--max-minutes": max_minutes}
            unused["--max-steps"] = max_steps
            if flags := [flag for flag, value in unused.items() if value is not None]:
                raise InvalidInput(f"{', '.join(flags)} do(es) not apply to --query-adapter (it trains in seconds)")
            _train_query_adapter(pairs, out, base or "all-MiniLM-L6-v2", given, symmetric, seed)
            return
        config = TrainConfig(
            dim=dim, frozen_dense=frozen_dense, max_minutes=max_minutes, max_steps=max_steps, seed=seed
        )
        for key, value in given.items():
            setattr(config, key, value)
        result = train_from_file(pairs, out, base or packaged_model_path(), config)
        console.print(
            f"saved {result.model_dir}: {result.steps} steps in {result.duration_s:.0f} s on {result.device}"
            + (f" (stopped early: {result.stop_reason})" if result.stopped_early else "")
        )

    run_command(go)


def _train_query_adapter(pairs: Path, out: Path, base: str, given: dict[str, Any], symmetric: bool, seed: int) -> None:
    """`flywheel train --query-adapter`: a stand-alone query adapter on cached base vectors."""
    from dataclasses import replace

    from flywheel.learn.query_adapter_file import LABELLED_DEFAULTS, train_adapter_file

    if "epochs" in given:
        if given["epochs"] != int(given["epochs"]) or given["epochs"] < 1:
            raise InvalidInput(f"--query-adapter needs a whole number of --epochs (at least 1), got {given['epochs']}")
        given["epochs"] = int(given["epochs"])
    meta = train_adapter_file(pairs, out, base, replace(LABELLED_DEFAULTS, seed=seed, **given), symmetric)
    console.print(
        f"saved {out}: query adapter over {meta['base_model']}, {meta['steps']} steps in {meta['duration_s']:.0f} s "
        f"on {meta['data']['n_pairs']:,} pairs"
    )


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model folder or name.")],
    pairs: Annotated[Path, typer.Option(help="Labelled pairs JSONL(.gz): question1,question2,is_duplicate.")],
    calibration: Annotated[Path | None, typer.Option(help="Separate pairs to fit the threshold on.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and bootstrap.")] = 0,
) -> None:
    """Pair error rate (1 - accuracy of a logistic threshold on cosine) with a 95% CI, as one JSON object."""

    def go() -> None:
        from flywheel.lab.evaluate import evaluate_pairs_file

        print_json(evaluate_pairs_file(model, pairs, calibration, seed=seed))

    run_command(go)


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="A new or empty folder for the demo.")] = Path(
        "flywheel-demo"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace a previous demo's folder.")] = False,
    queries: Annotated[
        int, typer.Option(help="Distinct simulated queries (of the world's traffic queries).", min=10)
    ] = 3000,
    rounds: Annotated[int, typer.Option(help="Uniform traffic: times each query is asked.", min=1)] = 3,
    traffic: Annotated[
        str, typer.Option(help="uniform (every query `rounds` times) or zipf (popular questions come back).")
    ] = "uniform",
    searches: Annotated[
        int | None, typer.Option(help="Zipf traffic: searches in all (default: rounds x queries).", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated users.")] = 0,
    base_model: Annotated[str | None, typer.Option(help="Model to start from (default: packaged MiniLM).")] = None,
    world: Annotated[
        str | None, typer.Option(help="The shipped world to run on: scifact (the default) or quora.")
    ] = None,
    beir: Annotated[
        Path | None,
        typer.Option(help="A BEIR folder to use instead of a shipped world (corpus, queries, qrels)."),
    ] = None,
    online: Annotated[
        str | None,
        typer.Option(
            help="Test a candidate that passes the offline gate on live simulated searches first: interleave "
            "or shadow (default: the online_test setting, off)."
        ),
    ] = None,
) -> None:
    """The whole loop on real data (SciFact by default): ingest, simulated users over HTTP, one cycle, before/after.

    The users ask only the world's traffic queries; its check queries are held back from the cycle.
    """
    import time

    def go() -> None:
        from flywheel.lab.demo import DEMO_USER, DemoPlan, demo_settings, prepare_data_dir, print_result, run_demo
        from flywheel.lab.simulate import Traffic
        from flywheel.lab.worlds import load_beir_world, load_world

        started = time.monotonic()
        if traffic not in ("uniform", "zipf"):
            raise InvalidInput(f"unknown traffic {traffic!r}: use 'uniform' or 'zipf'")
        if world and beir:
            raise InvalidInput("choose either --world or --beir, not both")
        chosen = load_beir_world(beir) if beir else load_world(world or "scifact")
        if online not in (None, "off", "interleave", "shadow"):
            raise InvalidInput(f"unknown online test {online!r}: use 'off', 'interleave' or 'shadow'")
        overrides = {"base_model": base_model} if base_model else {}
        settings = demo_settings(data_dir, **overrides, **({"online_test": online} if online else {}))
        prepare_data_dir(data_dir, force)
        basic_logging("warning")
        console.print(
            f"flywheel demo in {data_dir}: {chosen.name}, {len(chosen.corpus):,} documents, "
            f"{min(queries, len(chosen.traffic_queries)):,} distinct queries, {traffic} traffic "
            f"({len(chosen.check_queries):,} check queries held back)"
        )
        distinct = min(queries, len(chosen.traffic_queries))
        plan = DemoPlan(
            queries=queries,
            traffic=Traffic(
                popularity=traffic,
                rounds=rounds,
                searches=(searches or rounds * distinct) if traffic == "zipf" else None,
                user=DEMO_USER,
            ),
            seed=seed,
        )
        result = run_demo(settings, chosen, plan, console)
        print_result(console, result)
        console.print(f"total {time.monotonic() - started:.0f} s")
        if result.decision == "failed":
            raise typer.Exit(1)

    run_command(go)


@app.command()
def sweep(
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="Held-out labelled pairs (default: the shipped Quora dev pairs).")
    ] = None,
    train_file: Annotated[
        Path | None,
        typer.Option("--train", help="Training pairs; without it the eval file is split in half by query."),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Base model name or path; repeat for several.")
    ] = None,
    sizes: Annotated[str, typer.Option(help="Training sizes in pairs, comma-separated.")] = "100,300,1000,3000,10000",
    dims: Annotated[str, typer.Option(help="Output dimensions: integers or 'full', comma-separated.")] = "full,256",
    modes: Annotated[
        str,
        typer.Option(help="Training modes: full (fine-tune), frozen-dense (frozen base + Dense), query-adapter."),
    ] = "full,frozen-dense,query-adapter",
    out: Annotated[Path, typer.Option(help="Results CSV; rows already there are skipped (resume).")] = Path(
        "sweep/sweep.csv"
    ),
    chart: Annotated[Path | None, typer.Option(help="PNG chart (default: the CSV path with .png).")] = None,
    epochs: Annotated[float, typer.Option(help="Epochs per cell.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    loss: Annotated[str | None, typer.Option(help="Loss (default: the measured best).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Training time cap per cell.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the subsets and training.")] = 42,
    keep_models: Annotated[bool, typer.Option(help="Keep each cell's trained model.")] = False,
    symmetric: Annotated[
        bool, typer.Option(help="query-adapter cells also train each pair the other way round (duplicate questions).")
    ] = False,
) -> None:
    """Train and evaluate a grid of base model x training size x dimension x mode; write a CSV and a chart."""

    def go() -> None:
        from flywheel.lab.sweep import SHIPPED_EVAL, SweepSpec, run_sweep
        from flywheel.lab.sweep_rows import parse_dims, parse_ints

        spec = SweepSpec(
            eval_file=eval_file or SHIPPED_EVAL,
            train_file=train_file,
            models=model or ["all-MiniLM-L6-v2"],
            sizes=parse_ints([sizes], "size"),
            dims=parse_dims([dims]),
            modes=[m.strip() for m in modes.split(",") if m.strip()],
            epochs=epochs,
            batch_size=batch_size,
            loss=loss,
            seed=seed,
            max_minutes=max_minutes,
            symmetric=symmetric,
        )
        basic_logging("warning")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one sweep bar instead of a weight-loading bar per cell

        def show(row: dict[str, Any]) -> None:
            ci = f"[{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
            console.print(
                f"{row['model']} {row['mode']:<7} dim={row['dim']!s:<4} n={row['n_train']:<6} "
                f"error {100 * row['error_rate']:.1f}% {ci}  train {float(row['train_seconds']):.0f} s"
            )

        rows = run_sweep(spec, out, chart, keep_models=keep_models, on_row=show)
        console.print(f"{len(rows)} rows in {out}; chart: {chart or out.with_suffix('.png')}")

    run_command(go)
