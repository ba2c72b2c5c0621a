"""Apache Spark: pyspark sessions (`SparkClient`, which the Dagster resource wraps) and JDBC reads of our
PostgreSQL.

A Spark Connect server when `remote` is set (SPARK_REMOTE, e.g. `sc://127.0.0.1:15002`, which
`clickstream up` starts): a run then connects in under a second instead of starting a JVM. Otherwise a
local session (`local[*]`), or a cluster master (`spark://host:7077`, `yarn`) through `master`; these get
the PostgreSQL JDBC driver through `spark.jars`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from clickstream_dagster.clients.net import port_open
from clickstream_dagster.settings import cache_dir, redact_url

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

POSTGRES_JDBC_DRIVER = "org.postgresql.Driver"
POSTGRES_JDBC_VERSION = "42.7.14"

# libpq URL parameters that pgjdbc understands, and their pgjdbc names.
_LIBPQ_TO_JDBC_PARAMS = {
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert",
    "sslcert": "sslcert",
    "sslkey": "sslkey",
    "options": "options",
    "application_name": "ApplicationName",
    "connect_timeout": "connectTimeout",
    "target_session_attrs": "targetServerType",
}


@dataclass(frozen=True)
class JdbcConnection:
    """Where Spark reads PostgreSQL from: a `jdbc:postgresql://` URL plus credentials kept out of the URL."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def properties(self, **extra: str) -> dict[str, str]:
        props = {"driver": POSTGRES_JDBC_DRIVER, **extra}
        if self.user is not None:
            props["user"] = self.user
        if self.password is not None:
            props["password"] = self.password
        return props


def jdbc_from_libpq(url: str) -> JdbcConnection:
    """`postgresql://user[:password]@host:port/db?sslmode=...` -> `jdbc:postgresql://host:port/db?sslmode=...` +
    user and password.

    The host part is kept as written (pgjdbc accepts `[::1]:5432` and `h1:5432,h2:5432` too); libpq's
    defaults fill what is missing: host localhost, port 5432, database = user name.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or (scheme not in ("postgres", "postgresql") and not scheme.startswith("postgresql+")):
        raise ValueError(
            f"not a PostgreSQL URL: {redact_url(url)!r} (expected postgresql://user@host:port/db)"
        )
    parts = urlsplit(url)
    creds, at, hostspec = parts.netloc.rpartition("@")
    if not at:
        creds, hostspec = "", parts.netloc
    user_raw, colon, password_raw = creds.partition(":")
    user = unquote(user_raw) or None
    password = unquote(password_raw) if colon else None

    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in {"host", "hostaddr"}:
            raise ValueError(
                f"{key}= in {redact_url(url)!r} is not supported by JDBC (a unix socket or a libpq-only "
                "setting): give the server as host:port in the URL, e.g. postgresql://user@127.0.0.1:5432/db"
            )
        if key == "user":
            user = value
        elif key == "password":
            password = value
        elif key == "dbname":
            parts = parts._replace(path="/" + value)
        elif key in _LIBPQ_TO_JDBC_PARAMS:
            params[_LIBPQ_TO_JDBC_PARAMS[key]] = value
        else:
            supported = ", ".join(sorted(_LIBPQ_TO_JDBC_PARAMS))
            raise ValueError(f"URL parameter {key!r} has no JDBC equivalent here (supported: {supported})")
    if unquote(hostspec).startswith("/"):
        raise ValueError(f"{redact_url(url)!r} names a unix socket; JDBC needs a TCP host:port")

    database = unquote(parts.path.lstrip("/")) or user or "postgres"
    jdbc = f"jdbc:postgresql://{hostspec or 'localhost:5432'}/{database}"
    if params:
        jdbc += "?" + urlencode(params)
    return JdbcConnection(url=jdbc, user=user, password=password)


def read_jdbc(
    spark: SparkSession,
    jdbc: JdbcConnection,
    table: str,
    predicates: Sequence[str],
    fetch_size: int = 10_000,
) -> DataFrame:
    """Read `table` as one partition per WHERE predicate; Spark prunes the columns it does not use.

    With Spark Connect the *server* opens the connection, so `jdbc.url` must be reachable from it.
    """
    if not predicates:
        raise ValueError("read_jdbc needs at least one predicate (use ['TRUE'] to read the whole table)")
    return spark.read.jdbc(
        url=jdbc.url,
        table=table,
        predicates=list(predicates),
        properties=jdbc.properties(fetchsize=str(fetch_size)),
    )


def missing_driver_hint(exc: BaseException, remote: bool) -> str | None:
    """What to do when Spark could not load the PostgreSQL driver, or None for other errors."""
    text = str(exc)
    if POSTGRES_JDBC_DRIVER not in text and "No suitable driver" not in text:
        return None
    if remote:
        return (
            "the Spark Connect server (SPARK_REMOTE) has no PostgreSQL JDBC driver: start it with "
            "`clickstream up` (which passes the driver with --jars), or add org.postgresql:postgresql "
            "to that server's --jars / spark.jars.packages"
        )
    return (
        "the local Spark session has no PostgreSQL JDBC driver: it is fetched into the stack cache by "
        "`clickstream up`; or set the resource's `jars` to the driver jar"
    )


class SparkClient:
    """One pyspark session, created on first use and reused until `stop()`.

    A Spark Connect server when `remote` is set (`sc://host:port`); otherwise a local session (`local[*]`),
    or a cluster master (`spark://host:7077`, `yarn`) through `master`, with the PostgreSQL JDBC driver
    through `spark.jars` (`jars`, default: the driver `make setup` fetched into the cache).
    """

    def __init__(
        self,
        master: str = "local[*]",
        remote: str = "",
        app_name: str = "clickstream-dagster",
        shuffle_partitions: int = 4,
        jars: str = "",
    ) -> None:
        self.master = master
        self.remote = remote
        self.app_name = app_name
        self.shuffle_partitions = shuffle_partitions
        self.jars = jars
        self._session: SparkSession | None = None
        self._session_lock = threading.Lock()
        self._warm_up: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return self.remote or self.master

    def session(self) -> SparkSession:
        """This client's session, created on first use and reused until `stop()`."""
        with self._session_lock:
            if self._session is None:
                self._session = self._connect() if self.remote else self._local()
            return self._session

    def warm_up_in_background(self) -> None:
        """With Spark Connect, open the session and run one trivial query in a background thread.

        A run's worker is a fresh process: importing the Connect client, opening the session and the first
        query cost 2-3 s (measured), which then overlap the steps before the Spark one. A failure is left to
        the step that uses the session, which reports it.
        """
        if self.remote and self._warm_up is None:
            self._warm_up = threading.Thread(target=self._warm, name="spark-connect-warm-up", daemon=True)
            self._warm_up.start()

    def _warm(self) -> None:
        try:
            self.session().sql("SELECT 1").collect()
        except Exception:  # reported by the step that needs the session
            return

    def _connect(self) -> SparkSession:
        from pyspark.sql import SparkSession

        host, port = _remote_host_port(self.remote)
        if not port_open(host, port, timeout=2.0):
            raise RuntimeError(
                f"Spark Connect not reachable at {self.remote}: run `clickstream up` (it starts the server), "
                "or set SPARK_REMOTE to a running server, or unset it to use a local session"
            )
        with _connect_mode:
            session = (
                SparkSession.builder.remote(self.remote)
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
                .create()
            )
            _connect_mode.opened()
        return session

    def _local(self) -> SparkSession:
        from pyspark.sql import SparkSession

        jars = self.jars or ",".join(str(j) for j in default_jdbc_jars())
        with _without_connect_env():
            return (
                SparkSession.builder.master(self.master)
                .appName(self.app_name)
                .config("spark.jars", jars)
                .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.session.timeZone", "UTC")
                .getOrCreate()
            )

    def stop(self) -> None:
        """Wait for a warm-up, then release the session: a Connect session is closed on the server, a local
        one stops its SparkContext."""
        if self._warm_up is not None:
            self._warm_up.join(timeout=30)
            self._warm_up = None
        with self._session_lock:
            if self._session is None:
                return
            session, self._session = self._session, None
            session.stop()
            if self.remote:
                _connect_mode.closed()


class _ConnectMode:
    """pyspark marks the whole process as Spark Connect (SPARK_CONNECT_MODE_ENABLED) on the first Connect
    session and never unmarks it; after that a local session cannot start in the process and
    `pyspark.sql.functions` build Connect columns. We take the mark back when our last Connect session
    closes, unless it was there before (tests and notebooks use both kinds in one process)."""

    _VAR = "SPARK_CONNECT_MODE_ENABLED"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._open = 0
        self._preexisting = False

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._open == 0:
            self._preexisting = self._VAR in os.environ

    def __exit__(self, *exc: object) -> None:
        if self._open == 0 and not self._preexisting:
            os.environ.pop(self._VAR, None)  # creating the first session failed
        self._lock.release()

    def opened(self) -> None:
        self._open += 1

    def closed(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)
            if self._open == 0 and not self._preexisting:
                os.environ.pop(self._VAR, None)


_connect_mode = _ConnectMode()


def _remote_host_port(remote: str) -> tuple[str, int]:
    parts = urlsplit(remote)
    if parts.scheme != "sc" or not parts.hostname:
        raise ValueError(f"SPARK_REMOTE {remote!r} is not a Spark Connect URL: expected sc://host:port")
    return parts.hostname, parts.port or 15002


@contextmanager
def _without_connect_env() -> Iterator[None]:
    """Hide SPARK_REMOTE while building a local session.

    The stack exports SPARK_REMOTE (empty when Spark Connect is not used), and pyspark's builder treats its
    mere presence as "use Spark Connect", so a local session would fail to start.
    """
    saved = {k: os.environ.pop(k) for k in ("SPARK_REMOTE",) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def jdbc_jars_dir(cache: Path) -> Path:
    """Where the PostgreSQL JDBC driver and its dependencies are kept (`make setup` fetches them)."""
    return cache / f"postgresql-jdbc-{POSTGRES_JDBC_VERSION}"


def default_jdbc_jars() -> list[Path]:
    """The PostgreSQL JDBC driver in the cache (CLICKSTREAM_CACHE_DIR), for local and cluster sessions."""
    folder = jdbc_jars_dir(cache_dir())
    jars = sorted(folder.glob("*.jar"))
    if not any(j.name.startswith("postgresql-") for j in jars):
        raise RuntimeError(
            f"no PostgreSQL JDBC driver in {folder}: run `make setup` (or `clickstream up`), which fetches "
            "it, or pass the driver jar as the Spark resource's `jars`"
        )
    return jars
