"""The `clickstream` command: local stack, data generation, replay."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.process import StackError


def _config() -> StackConfig:
    return StackConfig.from_env()


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """clickstream-dagster: Apache Kafka -> Dagster -> PostgreSQL clickstream platform."""


@main.command()
def setup() -> None:
    """Fetch the Apache Kafka broker jars with Maven (once; cached under .cache/)."""
    from clickstream_dagster.stack.kafka import fetch_jars
    from clickstream_dagster.stack.spark import fetch_jdbc_jars

    cfg = _config()
    try:
        libs = fetch_jars(cfg, quiet=True)
        jdbc = fetch_jdbc_jars(cfg)
    except StackError as exc:
        _fail(exc)
    click.echo(f"Kafka jars: {libs}")
    click.echo(f"PostgreSQL JDBC driver for Spark: {jdbc[0].parent}")


def _start_cluster() -> None:
    """The scale rehearsal started, and its endpoints put in this process's environment."""
    import os

    from clickstream_dagster.stack.cluster import ClusterRehearsal

    rehearsal = ClusterRehearsal(_config())
    click.echo("Starting the scale rehearsal (3 Kafka brokers, Spark master + 2 workers, Spark Connect):")
    rehearsal.start()
    os.environ.update(rehearsal.env())
    for name, address, state in rehearsal.status():
        click.echo(f"  {name:<18} {state:<9} {address}")
    click.echo('  its endpoints, for every other command: eval "$(clickstream cluster env)"')


@main.command()
@click.option("--data-only", is_flag=True, help="Only PostgreSQL and Kafka (no Dagster).")
@click.option(
    "--cluster",
    is_flag=True,
    help="First start the scale rehearsal (`clickstream cluster up`) and run the stack against it.",
)
def up(data_only: bool, cluster: bool) -> None:
    """Start the stack (PostgreSQL, Kafka, Dagster); reuses existing data."""
    from clickstream_dagster.stack.manager import Stack

    try:
        if cluster:
            _start_cluster()
    except StackError as exc:
        _fail(exc)
    stack = Stack(_config())
    click.echo("Starting the clickstream stack:")
    try:
        if data_only:
            stack.up_data_services(click.echo)
        else:
            stack.up(click.echo)
    except StackError as exc:
        _fail(exc)
    _print_status(stack)


@main.command()
@click.option(
    "--raw-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The RetailRocket files to run on (default: data/raw/; a dataset is generated there when it is empty)",
)
def demo(raw_dir: Path | None) -> None:
    """The main job: start the whole stack, run the pipeline end to end, print where to look."""
    from clickstream_dagster.stack.demo import run_demo
    from clickstream_dagster.stack.manager import Stack

    cfg = _config()
    try:
        result = run_demo(cfg, click.echo, raw_dir=raw_dir.resolve() if raw_dir else None)
    except StackError as exc:
        _fail(exc)
    _print_status(Stack(cfg))
    click.echo("\nWhat landed:")
    for name, count in result.counts.items():
        click.echo(f"  {name:<26} {count:>12,}")
    click.echo(f"\nServing: {result.serving}")
    click.echo("\nWhere to look:")
    click.echo(f"  Dagster UI      {cfg.dagster_url}  (assets: {cfg.dagster_url}/assets)")
    click.echo(f"  Dashboard       {cfg.dashboard_url}")
    click.echo(f"  API docs        {cfg.api_url}/docs  (e.g. {cfg.api_url}/recommendations/<visitorid>)")
    click.echo(f"  Kafka           {cfg.bootstrap_servers} (topic `{cfg.topic}`)")
    click.echo(f"  PostgreSQL      {cfg.database_url}")
    click.echo(f"  Spark Connect   {cfg.spark_remote}")
    click.echo("  Replay more:    .venv/bin/clickstream produce --messages-per-second 200")
    click.echo("  Stop it with    make down")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def api(ctx: click.Context) -> None:
    """Serve the recommendations API in the foreground (`up` runs it in the background); options as
    `python -m clickstream_dagster.api --help`."""
    from clickstream_dagster.api.__main__ import main as serve

    sys.exit(serve(ctx.args))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def dashboard(ctx: click.Context) -> None:
    """Serve the Streamlit dashboard in the foreground (`up` runs it in the background); extra options go
    to `streamlit run`."""
    from streamlit.web import cli as streamlit_cli

    cfg = _config()
    app = str(cfg.root / "dashboards" / "app.py")
    sys.argv = ["streamlit", "run", app, "--server.port", str(cfg.ports.dashboard), *ctx.args]
    sys.exit(streamlit_cli.main())


@main.command()
@click.option("--cluster", is_flag=True, help="Also stop the scale rehearsal (`clickstream cluster down`).")
def down(cluster: bool) -> None:
    """Stop every process the stack started (data is kept in .data/)."""
    from clickstream_dagster.stack.manager import Stack

    click.echo("Stopping the clickstream stack:")
    try:
        Stack(_config()).down(click.echo)
        if cluster:
            _stop_cluster()
    except StackError as exc:
        _fail(exc)
    click.echo("  all stopped")


def _stop_cluster() -> None:
    from clickstream_dagster.stack.cluster import ClusterRehearsal

    for name in ClusterRehearsal(_config()).stop():
        click.echo(f"  stopped {name}")


@main.group()
def cluster() -> None:
    """The scale rehearsal on this machine: a 3-broker Kafka KRaft cluster (replication factor 3,
    min.insync.replicas 2, 6 partitions) and a Spark standalone cluster (master + 2 workers) with Spark
    Connect on it. The stack uses it through KAFKA_BOOTSTRAP_SERVERS and SPARK_REMOTE only (docs/deploy.md)."""


@cluster.command("up")
def cluster_up() -> None:
    """Start the rehearsal's processes (data in .data/cluster/)."""
    try:
        _start_cluster()
    except StackError as exc:
        _fail(exc)


@cluster.command("down")
def cluster_down() -> None:
    """Stop the rehearsal's processes (data is kept)."""
    _stop_cluster()


@cluster.command("status")
def cluster_status() -> None:
    """Each process of the rehearsal and its state. Exit code 1 if any is not running."""
    from clickstream_dagster.stack.cluster import ClusterRehearsal

    rows = ClusterRehearsal(_config()).status()
    for name, address, state in rows:
        click.echo(f"  {name:<18} {state:<9} {address}")
    if any(state not in ("healthy", "running") for _n, _a, state in rows):
        sys.exit(1)


@cluster.command("env")
def cluster_env() -> None:
    """Print the rehearsal's endpoints as exports: eval "$(clickstream cluster env)"."""
    from clickstream_dagster.stack.cluster import ClusterRehearsal

    rehearsal = ClusterRehearsal(_config())
    try:
        rehearsal.require_running()
    except StackError as exc:
        _fail(exc)
    for key, value in rehearsal.env().items():
        click.echo(f"export {key}={value!r}")


@main.command()
def status() -> None:
    """Show each component, its address and health. Exit code 1 if any is not healthy."""
    from clickstream_dagster.stack.manager import Stack

    if not _print_status(Stack(_config())):
        sys.exit(1)


def _print_status(stack: object) -> bool:
    from clickstream_dagster.stack.manager import Stack

    assert isinstance(stack, Stack)
    rows = stack.status()
    colors = {"healthy": "green", "external": "cyan", "stopped": "yellow", "unhealthy": "red"}
    for row in rows:
        state = click.style(f"{row.state:<9}", fg=colors.get(row.state))
        click.echo(f"  {row.name:<18} {state} {row.address:<28} {row.detail}")
    return all(r.ok for r in rows)


@main.command()
def env() -> None:
    """Print the environment the stack's services use (eval "$(clickstream env)")."""
    for key, value in _config().service_env().items():
        click.echo(f"export {key}={value!r}")


@main.command()
def migrate() -> None:
    """Apply pending SQL migrations to DATABASE_URL (or the embedded database)."""
    from clickstream_dagster.sql.migrate import apply_migrations

    applied = apply_migrations(_config().database_url)
    click.echo(f"applied {len(applied)} migration(s)" if applied else "schema up to date")


@main.command()
@click.option(
    "--scale", default="small", show_default=True, help="small (~30k events), full (2,756,101) or N."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/raw"),
    show_default=True,
)
@click.option(
    "--overwrite", is_flag=True, help="Replace files the generator did not write (e.g. a real download)."
)
def generate(scale: str, seed: int, out_dir: Path, overwrite: bool) -> None:
    """Write RetailRocket-shaped events.csv, category_tree.csv and item_properties_part1/2.csv."""
    from clickstream_dagster.data.generator import generate as run_generator
    from clickstream_dagster.data.generator import parse_scale

    try:
        summary = run_generator(out_dir, parse_scale(scale), seed, progress=True, overwrite=overwrite)
    except (FileExistsError, ValueError) as exc:
        _fail(exc)
    for line in summary.lines():
        click.echo(line)


@main.command()
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("data/raw/events.csv"),
    show_default=True,
    help="RetailRocket events.csv to replay.",
)
@click.option("--topic", default=None, help="Target topic [default: CLICKSTREAM_TOPIC or clickstream].")
@click.option(
    "--messages-per-second",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Steady rate limit (token bucket); 0 = unlimited.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Messages per delivery batch; at most --max-in-flight-batches are unacknowledged.",
)
@click.option("--max-in-flight-batches", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after this many messages.")
@click.option(
    "--speedup",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Replay the original inter-event timing compressed by this factor.",
)
@click.option(
    "--resume", is_flag=True, help="Skip exactly what a previous run of this file got into the topic."
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Partition count if the topic has to be created.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where rejected rows go [default: next to the input].",
)
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.option("--linger-ms", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--compression", type=click.Choice(["none", "gzip"]), default="none", show_default=True)
def produce(
    path: Path,
    topic: str | None,
    messages_per_second: float,
    batch_size: int,
    max_in_flight_batches: int,
    limit: int | None,
    speedup: float | None,
    resume: bool,
    partitions: int,
    rejects_path: Path | None,
    metrics_port: int | None,
    linger_ms: int,
    compression: str,
) -> None:
    """Replay events.csv into Kafka (acks=all, idempotent, backpressure, exact resume)."""
    import logging

    from clickstream_dagster.clients.kafka import KafkaClient, KafkaUnavailable
    from clickstream_dagster.logs import configure_logging
    from clickstream_dagster.producer.metrics import ProducerMetrics
    from clickstream_dagster.producer.replay import Replayer, ReplayOptions

    configure_logging(service="producer")  # CLICKSTREAM_LOG_FORMAT=json: one JSON object per line
    logging.getLogger("kafka").setLevel(logging.ERROR)
    cfg = _config()
    options = ReplayOptions(
        path=path,
        topic=topic or cfg.topic,
        messages_per_second=messages_per_second,
        batch_size=batch_size,
        max_in_flight_batches=max_in_flight_batches,
        limit=limit,
        speedup=speedup,
        resume=resume,
        partitions=partitions,
        rejects_path=rejects_path,
        linger_ms=linger_ms,
        compression=None if compression == "none" else compression,
    )
    metrics = ProducerMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
        click.echo(f"Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics", err=True)
    kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=options.topic)
    try:
        summary = Replayer(kafka, options, metrics).run()
    except KafkaUnavailable as exc:
        _fail(exc)
    for line in summary.lines():
        click.echo(line)
    if summary.failed or not summary.reconciles:
        sys.exit(1)
    if summary.interrupted:
        sys.exit(130)


@main.group()
def quarantine() -> None:
    """Inspect the quarantine and replay repaired rows (exactly once)."""


@quarantine.command("status")
def quarantine_status() -> None:
    """Quarantined Kafka messages by kind: waiting for a repair, repaired, repair invalid, replayed."""
    import psycopg

    from clickstream_dagster.sql import queries as q

    try:
        with psycopg.connect(_config().database_url, connect_timeout=10) as conn:
            rows = conn.execute(q.QUARANTINE_STATES).fetchall()
    except psycopg.Error as exc:
        _fail(RuntimeError(f"PostgreSQL not reachable: run `clickstream up` or set DATABASE_URL ({exc})"))
    click.echo(f"{'kind':<28} {'to repair':>10} {'repaired':>10} {'invalid':>10} {'replayed':>10}")
    for kind, waiting, repaired, invalid, replayed in rows:
        click.echo(f"{kind:<28} {waiting:>10,} {repaired:>10,} {invalid:>10,} {replayed:>10,}")
    if not rows:
        click.echo("(the quarantine holds no Kafka message)")
    click.echo(
        "\nRepair a row by writing its corrected value, e.g.\n"
        "  UPDATE quarantine SET repaired_payload = convert_to('{\"v\":1,...}', 'UTF8') WHERE id = 42;\n"
        "then run `clickstream quarantine replay` (with filters to replay only some)."
    )


@quarantine.command("replay")
@click.option(
    "--reason", "reason_kind", default="", help="Only rows whose reason kind is this (e.g. 'negative id')."
)
@click.option("--topic", default="", help="Only rows of this topic.")
@click.option("--partition", type=int, default=-1, help="Only rows of this partition.")
@click.option("--id", "ids", type=int, multiple=True, help="Only these quarantine ids (repeatable).")
def quarantine_replay(reason_kind: str, topic: str, partition: int, ids: tuple[int, ...]) -> None:
    """Run the replay_quarantine job: repaired rows go into clickstream_events under their original
    coordinates, exactly once, and the windows and statistics follow. Replaying again adds nothing."""
    import json

    from clickstream_dagster.stack.demo import dagster_cli

    cfg = _config()
    replay = {"reason_kind": reason_kind, "topic": topic, "partition": partition, "ids": list(ids)}
    config_file = cfg.data_dir / "replay-quarantine-config.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps({"ops": {"raw_events": {"config": {"replay_quarantine": replay}}}}))
    try:
        dagster_cli(cfg, ["job", "execute", "-j", "replay_quarantine", "--config", str(config_file)])
    except StackError as exc:
        _fail(exc)
    click.echo("replay_quarantine finished; `clickstream quarantine status` shows what moved")


@main.command(
    "kafka-tool",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("tool")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def kafka_tool(tool: str, args: tuple[str, ...]) -> None:
    """Run one of Kafka's own tools from the fetched jars, e.g. `kafka-topics --bootstrap-server ... --list`."""
    from clickstream_dagster.stack.kafka import TOOLS, run_tool

    if tool not in TOOLS:
        _fail(StackError(f"unknown tool {tool!r}; choose from: {', '.join(sorted(TOOLS))}"))
    result = run_tool(_config(), tool, list(args), timeout=600)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
