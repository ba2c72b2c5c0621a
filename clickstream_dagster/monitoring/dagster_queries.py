"""The one GraphQL query the pipeline exporter sends to Dagster's webserver (`<dagster_url>/graphql`):
Dagster's public interface (as the dashboard's queries, dashboard/dagster_queries.py), no storage tables.

Runs that finished (success, failure, cancellation) and were updated after `$updatedAfter` (a Unix timestamp
in seconds), oldest first as the exporter walks them, with each step's timing.
"""

from __future__ import annotations

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
