"""Every GraphQL query sent to Dagster's webserver (`<dagster_url>/graphql`): the dashboard's and the pipeline
exporter's, through `clients.dagster.DagsterWebserver`.

Dagster's public interface, checked against the schema dagster-graphql 1.13 serves: no storage tables, no
serialized events. Values are bound as GraphQL variables; only the run statuses below (constants) are
written into the text, as one aliased count each.
"""

from __future__ import annotations

# The `RunStatus` enum of the schema; each gets its own count (`Runs.count` is one COUNT in the storage).
RUN_STATUSES = (
    "QUEUED",
    "NOT_STARTED",
    "MANAGED",
    "STARTING",
    "STARTED",
    "SUSPENDED",
    "SUCCESS",
    "FAILURE",
    "CANCELING",
    "CANCELED",
)

_RUN_COUNTS = "\n".join(
    f"  {status}: runsOrError(filter: {{statuses: [{status}], createdAfter: $createdAfter}}) "
    "{ __typename ... on Runs { count } ...Problem }"
    for status in RUN_STATUSES
)

# Per asset its newest materialization; raw_events' newest `$recent` ones; the runs created since
# `$createdAfter` (a Unix timestamp in seconds) per status. Timestamps come back as milliseconds (strings).
# IntMetadataEntry.intValue is null beyond 32 bits, so ints are read from intRepr.
DAGSTER_HEALTH = (
    """
query DashboardDagsterHealth($rawEvents: AssetKeyInput!, $recent: Int!, $createdAfter: Float!) {
  assetsOrError {
    __typename
    ... on AssetConnection {
      nodes { key { path } assetMaterializations(limit: 1) { ...Materialization } }
    }
    ...Problem
  }
  rawEvents: assetOrError(assetKey: $rawEvents) {
    __typename
    ... on Asset { assetMaterializations(limit: $recent) { ...Materialization } }
    ...Problem
  }
"""
    + _RUN_COUNTS
    + """
}

fragment Materialization on MaterializationEvent {
  runId
  timestamp
  metadataEntries {
    __typename
    label
    ... on IntMetadataEntry { intRepr }
    ... on FloatMetadataEntry { floatRepr }
  }
}

fragment Problem on Error { message }
"""
)


# The exporter's: runs that finished (success, failure, cancellation) and were updated after `$updatedAfter` (a
# Unix timestamp in seconds), oldest first as the exporter walks them, with each step's timing.
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

FINISHED_RUNS = """
query ExporterFinishedRuns($updatedAfter: Float!, $limit: Int!) {
  runsOrError(filter: {statuses: [SUCCESS, FAILURE, CANCELED], updatedAfter: $updatedAfter}, limit: $limit) {
    __typename
    ... on Runs {
      results {
        runId
        jobName
        status
        startTime
        endTime
        updateTime
        stepStats { stepKey status startTime endTime }
      }
    }
    ... on PythonError { message }
    ... on InvalidPipelineRunsFilterError { message }
  }
}
"""
