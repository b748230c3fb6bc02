"""The commands that work on a data dir: serve, ingest, stats, retrain, rollback, gc, export, reports, ...."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flywheel.cli.app import ConfigOpt, DataDirOpt, app, console, err_console, print_json, run_command, settings_from
from flywheel.config import Settings
from flywheel.errors import ConfigError, NotFound, StoreLocked
from flywheel.util.progress import progress_bar


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (FLYWHEEL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLYWHEEL_PORT).")] = None,
) -> None:
    """Run the API (search, feedback, documents) on the data dir; it owns the DuckDB file and Qdrant folder."""
    import uvicorn

    from flywheel.api.app import create_app

    def start() -> None:
        settings = settings_from(config, data_dir=data_dir, host=host, port=port)
        check_bind(settings)
        from flywheel.logs import setup_logging, uvicorn_log_config

        setup_logging(settings.log_level, settings.log_format)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=uvicorn_log_config(),
        )

    run_command(start)


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond loopback while no API key is configured.

    Raises:
        ConfigError: host is not a loopback address and no keys are set.
    """
    if settings.auth_enabled:
        return
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"refusing to listen on {settings.host} without API keys: set FLYWHEEL_ADMIN_KEYS and "
            "FLYWHEEL_SEARCH_KEYS, or serve on 127.0.0.1"
        )


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSONL, CSV or TSV (optionally .gz) with id, text[, metadata].")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: Annotated[int, typer.Option(help="Documents per write.")] = 256,
) -> None:
    """Add or replace documents from a file (through the running server if one owns the data dir)."""
    from flywheel.formats.corpus import batched, read_documents

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        docs = list(read_documents(file))  # parse everything first: a bad line must not leave half a file in
        total = 0
        with _open_or_client(settings) as (service, client), progress_bar() as bar:
            task = bar.add_task(f"ingesting {file.name}", total=len(docs))
            for batch in batched(iter(docs), min(batch_size, settings.max_documents_per_request)):
                if service is not None:
                    total += service.upsert_documents(batch)
                else:
                    total += client.upsert_documents(
                        [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in batch]
                    )
                bar.advance(task, len(batch))
        console.print(f"read {len(docs)} rows, upserted {total} documents")

    run_command(go)


@app.command()
def stats(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print row counts of the event store (from the server if one owns the data dir)."""

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        try:
            from flywheel.serve.store import Store

            store = Store(settings.db_file)
        except StoreLocked:
            from flywheel.api.client import Client

            counts = Client.for_settings(settings).stats()
        else:
            counts = store.stats()
            store.close()
        table = Table("table", "rows")
        for name, value in counts.items():
            table.add_row(name, str(value))
        console.print(table)

    run_command(go)


@app.command()
def retrain(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    mode: Annotated[str | None, typer.Option(help="adapter | full | auto (default: the cycle_mode setting)")] = None,
) -> None:
    """Run one retraining cycle now (through the running server if one owns the data dir), with progress."""
    import time

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        with _open_or_client(settings) as (service, client):
            if service is not None:
                from flywheel.cycle.runner import CycleRunner

                runner = CycleRunner(service)
                runner.recover()
                with console.status("cycle starting") as status:
                    record = runner.run("cli", on_stage=lambda stage: status.update(f"cycle: {stage}"), mode=mode)
            else:
                cycle_id = client.request("POST", "/cycles", json={"mode": mode} if mode else None)["cycle_id"]
                with console.status(f"cycle {cycle_id} queued") as status:
                    while (record := client.request("GET", f"/cycles/{cycle_id}"))["state"] in ("queued", "running"):
                        status.update(f"cycle {cycle_id}: {record['stage'] or record['state']}")
                        time.sleep(1)
        _print_cycle(settings, record)
        if record["state"] == "failed":
            raise typer.Exit(1)

    run_command(go)


def _print_cycle(settings: Settings, record: dict[str, Any]) -> None:
    """One paragraph on how a cycle ended, with its reasons and report path."""
    from flywheel.cycle.report.files import load_report

    colour = {"promoted": "green", "rejected": "yellow"}.get(record["state"], "red")
    console.print(f"cycle {record['cycle_id']}: [{colour}]{record['state']}[/{colour}]")
    try:
        report = load_report(settings.reports_dir, record["cycle_id"])
    except NotFound:
        console.print(record.get("error") or "no report was written")
        return
    for reason in report.get("reasons") or []:
        console.print(f"  - {reason}")
    console.print(f"report: {settings.reports_dir / record['cycle_id'] / 'report.html'}")


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="Version to serve (default: the previous one).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve an earlier kept model version again (alias and encoder switch together)."""

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        with _open_or_client(settings) as (service, client):
            if service is not None:
                from flywheel.serve.versions import rollback as do_rollback

                version = do_rollback(service, to).version
            else:
                version = client.request("POST", "/models/rollback", json={"to": to})["model_version"]
        console.print(f"now serving {version}")

    run_command(go)


@app.command()
def gc(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")] = False,
) -> None:
    """Apply the retention settings now (FLYWHEEL_RETAIN_*; through the running server, with its settings)."""

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        with _open_or_client(settings) as (service, client):
            if service is not None:
                from flywheel.cycle.runner import CycleRunner

                result = CycleRunner(service).gc(dry_run=dry_run)
            else:
                result = client.request("POST", "/ops/gc", json={"dry_run": dry_run})
        console.print(gc_summary(result), highlight=False)

    run_command(go)


def gc_summary(result: dict[str, Any]) -> str:
    """Two lines on a retention run: the counts deleted (or that would be), and what the run had to keep."""
    counts = ", ".join(f"{n:,} {what.replace('_', ' ')}" for what, n in result["deleted"].items())
    kept = result["kept"]
    limits = [
        f"feedback after {kept['consumed_until']} (no cycle has learned from it)"
        if kept["consumed_until"]
        else "all feedback (no cycle has learned from any yet)",
        f"searches from {kept['held_out_from']} (held out)"
        if kept["held_out_from"]
        else "every search (no held-out window recorded yet)",
    ]
    return f"{'would delete' if result['dry_run'] else 'deleted'}: {counts}\nkept: {'; '.join(limits)}"


@app.command("export")
def export_onnx(
    version: Annotated[str, typer.Argument(help="Registry version, e.g. v1 (the base) or v3.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option(help="Export and guard again even if done before.")] = False,
) -> None:
    """Export a model version to ONNX fp32 + int8 beside its files, and run the int8 accuracy guard."""

    def go() -> None:
        from flywheel.models.export import export_folder, export_version
        from flywheel.models.guard import ensure_export, run_guard, verdict
        from flywheel.models.registry import Registry

        settings = settings_from(config, data_dir=data_dir)
        registry = Registry(settings.models_dir)
        entry = registry.get(version)
        if force:
            export_version(registry, entry, force=True)
            meta = run_guard(registry, entry, settings)
        else:
            meta = ensure_export(registry, entry, settings)[1]
        folder = export_folder(registry, entry)
        guard, parity = {**meta["guard"], **verdict(meta["guard"], settings)}, meta["parity"]
        console.print(f"{version}: ONNX export of {meta['source_version']} in {folder}")
        console.print(
            f"  fp32 vs torch: max |diff| {parity['fp32']['max_abs_diff']:.1e}; "
            f"int8 vs torch: mean cosine {parity['int8']['mean_cosine']:.4f}"
        )
        verdict = "[green]passed[/green]" if guard["passed"] else "[yellow]refused[/yellow]"
        console.print(f"  int8 accuracy guard {verdict} on {guard['data']}: {guard['reason']}", highlight=False)
        if not guard["passed"]:
            console.print("  FLYWHEEL_ENCODER_BACKEND=onnx-int8 will encode with onnx fp32 for this version")

    run_command(go)


@app.command("migrate-engine")
def migrate_engine(
    to: Annotated[str, typer.Option("--to", help="The embedded engine to move to: edge | local.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Move the data dir's collections to another embedded engine, copying the stored vectors (stop the server
    first); the data dir then records and opens with that engine."""

    def go() -> None:
        from flywheel.serve.engine import migrate_engine as migrate

        settings = settings_from(config, data_dir=data_dir)
        result = migrate(settings, to)
        for version, copied in result.copied.items():
            left = result.left_to_repair.get(version, 0)
            note = f" ({left} documents to re-embed on the next start)" if left else ""
            console.print(f"  {version}: {copied} points copied{note}")
        serving = f", serving {result.serving}" if result.serving else ""
        console.print(f"moved {settings.data_dir} from {result.source} to {result.target}{serving}")

    run_command(go)


reports_app = typer.Typer(help="Promotion reports, newest first.", no_args_is_help=False)
app.add_typer(reports_app, name="reports")


@reports_app.callback(invoke_without_command=True)
def reports(ctx: typer.Context, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List promotion reports (reads the report files; works while the server runs)."""
    if ctx.invoked_subcommand is not None:
        return
    from flywheel.cycle.report.files import list_reports

    settings = run_command(lambda: settings_from(config, data_dir=data_dir))
    table = Table("cycle", "created", "decision", "incumbent", "candidate", "error before → after", "nDCG@10 after")
    for r in list_reports(settings.reports_dir):
        err = [r.get("error_incumbent"), r.get("error_candidate")]
        table.add_row(
            r["cycle_id"],
            str(r.get("created_at", ""))[:19],
            str(r.get("decision")),
            str(r.get("incumbent") or ""),
            str(r.get("candidate") or ""),
            " → ".join("n/a" if e is None else f"{e * 100:.1f}%" for e in err),
            "n/a" if r.get("ndcg_candidate") is None else f"{r['ndcg_candidate']:.3f}",
        )
    console.print(table)


@reports_app.command("show")
def reports_show(cycle_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print one report.json."""
    from flywheel.cycle.report.files import load_report

    def go() -> None:
        settings = settings_from(config, data_dir=data_dir)
        print_json(load_report(settings.reports_dir, cycle_id))

    run_command(go)


class _open_or_client:  # noqa: N801 - used as a context manager
    """Open the data dir directly, or fall back to the running server's API when it holds the lock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = None
        self.client = None

    def __enter__(self) -> tuple[Any, Any]:
        from flywheel.serve.service import Service

        try:
            self.service = Service.open(self.settings, progress=True)
        except StoreLocked:
            from flywheel.api.client import Client

            err_console.print("data dir in use: sending through the running server's API")
            self.client = Client.for_settings(self.settings)
        return self.service, self.client

    def __exit__(self, *exc: object) -> None:
        if self.service is not None:
            self.service.close()
        if self.client is not None:
            self.client.close()
