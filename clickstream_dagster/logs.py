"""How every process of ours logs: plain lines by default, or with CLICKSTREAM_LOG_FORMAT=json one JSON object
per line (for ELK, Loki and the like), from the producer, the API, the pipeline exporter and Dagster's runs.

An object has `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, and when they apply
`service`, `exception`, and the fields Dagster attaches to a run's records (`run_id`, `job_name`,
`step_key`, `event_type`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

LOG_FORMAT_ENV = "CLICKSTREAM_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What Dagster attaches to a run's records (the `dagster_meta` attribute, dagster._core.log_manager's
# DagsterLogRecordMetadata): read defensively, each field only when present with the expected type.
_DAGSTER_META = "dagster_meta"
_DAGSTER_FIELDS = ("run_id", "job_name", "step_key")


def log_format(env: Mapping[str, str] | None = None) -> str:
    """ "json" or "text" (the default); anything else is refused with the choices."""
    value = (os.environ if env is None else env).get(LOG_FORMAT_ENV, "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={value!r}: expected one of {', '.join(LOG_FORMATS)}")
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            out["service"] = self.service
        meta = getattr(record, _DAGSTER_META, None)
        if isinstance(meta, dict):
            if isinstance(meta.get("orig_message"), str):
                out["message"] = meta["orig_message"]  # without the "job - run_id - step -" prefix
            for key in _DAGSTER_FIELDS:
                if isinstance(meta.get(key), str):
                    out[key] = meta[key]
            event_type = getattr(meta.get("dagster_event"), "event_type_value", None)
            if isinstance(event_type, str):
                out["event_type"] = event_type
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(service: str | None = None, env: Mapping[str, str] | None = None) -> logging.Formatter:
    return JsonFormatter(service) if log_format(env) == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    level: int = logging.INFO, service: str | None = None, env: Mapping[str, str] | None = None
) -> None:
    """The root logger writes to stderr in the chosen format (replacing its handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(service, env))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def dict_config(service: str, level: str = "INFO", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A logging.config.dictConfig for servers that take one (uvicorn's `log_config`): every logger, theirs
    and ours, through one stderr handler in the chosen format."""
    fmt: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter", "service": service}
        if log_format(env) == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
