"""Pure helpers of the dashboard's data layer."""

from __future__ import annotations

import inspect
import json

from clickstream_dagster.assets import ingestion
from clickstream_dagster.dashboard import data

ENTRY = {
    "__class__": "EventLogEntry",
    "dagster_event": {
        "__class__": "DagsterEvent",
        "event_specific_data": {
            "__class__": "StepMaterializationData",
            "materialization": {
                "__class__": "AssetMaterialization",
                "metadata_entries": [
                    {"__class__": "EventMetadataEntry", "label": "consumer_lag_after_run",
                     "entry_data": {"__class__": "IntMetadataEntryData", "value": 42}},
                    {"__class__": "EventMetadataEntry", "label": "quarantine_reasons",
                     "entry_data": {"__class__": "JsonMetadataEntryData", "data": {"not JSON": 1}}},
                ],
            },
        },
    },
}  # fmt: skip


def test_materialization_metadata_reads_both_record_shapes() -> None:
    expected = {"consumer_lag_after_run": 42, "quarantine_reasons": {"not JSON": 1}}
    assert data.materialization_metadata(json.dumps(ENTRY)) == expected
    record = {"__class__": "EventLogRecord", "event_log_entry": ENTRY, "storage_id": 7}
    assert data.materialization_metadata(json.dumps(record)) == expected
    newer = json.loads(json.dumps(ENTRY))
    materialization = newer["dagster_event"]["event_specific_data"]["materialization"]
    del materialization["metadata_entries"]
    materialization["metadata"] = {"consumer_lag_after_run": {"__class__": "IntMetadataValue", "value": 7}}
    assert data.materialization_metadata(newer) == {"consumer_lag_after_run": 7}
    assert data.materialization_metadata(None) == {}
    assert data.materialization_metadata("not json") == {}


def test_raw_events_still_reports_the_metadata_the_dashboard_reads() -> None:
    source = inspect.getsource(ingestion)
    for key in (data.LAG_METADATA_KEY, data.ROW_COUNT_METADATA_KEY, *data.INGEST_METADATA_KEYS):
        assert f'"{key}"' in source, f"raw_events no longer reports {key!r}: update the dashboard"


def test_metrics_long_flattens_validation_and_test_per_model() -> None:
    metrics = {
        "validation": {"ndcg@10": 0.1, "note": "text is not a metric"},
        "test": {"lightfm": {"ndcg@10": 0.2, "auc": 0.9}, "popularity": {"ndcg@10": 0.15}},
        "gate": {"passed": True, "margin": 0.01},
    }
    rows = data.metrics_long(3, "promoted", "lightfm", metrics)
    assert {(r["split"], r["model"], r["metric"], r["value"]) for r in rows} == {
        ("validation", "lightfm", "ndcg@10", 0.1),
        ("test", "lightfm", "ndcg@10", 0.2),
        ("test", "lightfm", "auc", 0.9),
        ("test", "popularity", "ndcg@10", 0.15),
    }
    assert all(r["version"] == 3 and r["status"] == "promoted" for r in rows)
    assert data.metrics_long(1, "candidate", "lightfm", None) == []


def test_small_formatters() -> None:
    assert data.category_text([1338, 1213, 250]) == "250 > 1213 > 1338"
    assert data.category_text(None) == ""
    assert data.asset_name('["raw_events"]') == "raw_events"
    assert data.asset_name('["ml", "model"]') == "ml/model"
    assert data.asset_key_json("raw_events") == '["raw_events"]'
    assert data.redact_url("postgresql://me:secret@db:5432/x") == "postgresql://me@db:5432/x"
    assert data.redact_url("postgresql://me@db/x") == "postgresql://me@db/x"
