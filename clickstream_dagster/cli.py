"""The `clickstream` command: local stack, data generation, replay."""

from __future__ import annotations

import sys

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

    cfg = _config()
    try:
        libs = fetch_jars(cfg, quiet=True)
    except StackError as exc:
        _fail(exc)
    click.echo(f"Kafka jars: {libs}")


@main.command()
@click.option("--data-only", is_flag=True, help="Only PostgreSQL and Kafka (no Dagster).")
def up(data_only: bool) -> None:
    """Start the stack (PostgreSQL, Kafka, Dagster); reuses existing data."""
    from clickstream_dagster.stack.manager import Stack

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
def demo() -> None:
    """The main job: start the whole stack, run the pipeline end to end, print where to look."""
    from clickstream_dagster.stack.manager import Stack

    cfg = _config()
    stack = Stack(cfg)
    click.echo("Starting the clickstream stack:")
    try:
        stack.up(click.echo)
    except StackError as exc:
        _fail(exc)
    _print_status(stack)
    click.echo("\nWhere to look:")
    click.echo(f"  Dagster UI      {cfg.dagster_url}")
    click.echo(f"  Kafka           {cfg.bootstrap_servers} (topic `{cfg.topic}`)")
    click.echo(f"  PostgreSQL      {cfg.database_url}")
    click.echo("  Stop it with    make down")


@main.command()
def down() -> None:
    """Stop every process the stack started (data is kept in .data/)."""
    from clickstream_dagster.stack.manager import Stack

    click.echo("Stopping the clickstream stack:")
    try:
        Stack(_config()).down(click.echo)
    except StackError as exc:
        _fail(exc)
    click.echo("  all stopped")


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
