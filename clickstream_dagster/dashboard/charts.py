"""Plotly figures of the dashboard; each takes what a `data` loader returns and draws nothing else."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clickstream_dagster.events import EVENT_TYPES

EVENT_COLORS = {"view": "#4C78A8", "addtocart": "#F58518", "transaction": "#54A24B"}
EVENT_LABELS = {"view": "views", "addtocart": "add-to-carts", "transaction": "transactions"}
OTHER_COLOR = "#9D755D"
SERIES_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D")
FONT = "Source Sans, sans-serif"


def _layout(fig: go.Figure, height: int, **extra: object) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        font={"family": FONT, "size": 13},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0, "title": None},
        hoverlabel={"font": {"family": FONT}},
        **extra,
    )
    return fig


def _ordered_events(events: pd.Series | list[str]) -> list[str]:
    seen = list(dict.fromkeys(events))
    return sorted(seen, key=lambda e: (EVENT_TYPES.index(e) if e in EVENT_TYPES else len(EVENT_TYPES), e))


def _color(event: str) -> str:
    return EVENT_COLORS.get(event, OTHER_COLOR)


def event_frequency(stats: pd.DataFrame) -> go.Figure:
    """Events per type (log scale: views outnumber purchases a hundred to one), labelled with their share."""
    stats = stats.set_index("event").loc[_ordered_events(stats["event"])].reset_index()
    fig = go.Figure(
        go.Bar(
            x=[EVENT_LABELS.get(e, e) for e in stats["event"]],
            y=stats["event_count"],
            marker_color=[_color(e) for e in stats["event"]],
            text=[f"{n:,} ({s:.1%})" for n, s in zip(stats["event_count"], stats["share"], strict=True)],
            textposition="outside",
            cliponaxis=False,
            customdata=stats[["unique_users", "unique_items"]].to_numpy(),
            hovertemplate="%{x}: %{y:,} events<br>%{customdata[0]:,} visitors, %{customdata[1]:,} items"
            "<extra></extra>",
        )
    )
    fig.update_yaxes(type="log", title="events (log scale)", showgrid=True)
    return _layout(fig, 330, showlegend=False)


def hourly_pattern(hourly: pd.DataFrame) -> go.Figure:
    """Each event type's share of its events per hour of day, so all types compare on one scale."""
    fig = go.Figure()
    for event in _ordered_events(hourly["event"]):
        part = hourly[hourly["event"] == event].sort_values("hour")
        fig.add_trace(
            go.Scatter(
                x=part["hour"],
                y=part["share"],
                name=EVENT_LABELS.get(event, event),
                mode="lines+markers",
                line={"color": _color(event), "width": 2, "shape": "spline", "smoothing": 0.6},
                marker={"size": 5},
                customdata=part["events"],
                hovertemplate="%{x}:00 UTC: %{y:.1%} (%{customdata:,} events)<extra>" + event + "</extra>",
            )
        )
    fig.update_xaxes(title="hour of day (UTC)", tickmode="linear", dtick=2, range=[-0.5, 23.5])
    fig.update_yaxes(title="share of the type's events", tickformat=".0%", rangemode="tozero")
    return _layout(fig, 330)


def windowed_series(windows: pd.DataFrame, per_window: bool) -> go.Figure:
    """Events per bucket over event time, one panel per event type (each on its own scale)."""
    events = _ordered_events(windows["event"])
    fig = make_subplots(
        rows=len(events),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[EVENT_LABELS.get(e, e) for e in events],
    )
    for row, event in enumerate(events, start=1):
        part = windows[windows["event"] == event].sort_values("bucket_start")
        if per_window:
            custom = part[["unique_users", "unique_items"]].to_numpy()
            hover = "%{x|%Y-%m-%d %H:%M} UTC: %{y:,} events<br>%{customdata[0]:,} visitors, %{customdata[1]:,} items"
        else:
            custom = part[["windows"]].to_numpy()
            hover = "%{x|%Y-%m-%d %H:%M} UTC: %{y:,} events in %{customdata[0]:,} windows"
        fig.add_trace(
            go.Scatter(
                x=part["bucket_start"],
                y=part["events"],
                name=EVENT_LABELS.get(event, event),
                mode="lines+markers" if len(part) < 60 else "lines",
                line={"color": _color(event), "width": 1.6},
                marker={"size": 4},
                fill="tozeroy",
                customdata=custom,
                hovertemplate=hover + "<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(rangemode="tozero", row=row, col=1)
    fig.update_annotations(font={"size": 13, "family": FONT}, x=0, xanchor="left")
    return _layout(fig, 110 + 130 * len(events), showlegend=False)


def top_items(items: pd.DataFrame) -> go.Figure:
    """The most active items, their events stacked by type; the category path is in the hover."""
    labels = [f"item {i}" for i in items["itemid"]]
    fig = go.Figure()
    for column, event in (("views", "view"), ("addtocarts", "addtocart"), ("transactions", "transaction")):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=items[column],
                name=EVENT_LABELS[event],
                orientation="h",
                marker_color=_color(event),
                customdata=items[["category"]].fillna("").to_numpy(),
                hovertemplate="%{y}: %{x:,} "
                + EVENT_LABELS[event]
                + "<br>category %{customdata[0]}<extra></extra>",
            )
        )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="events")
    _layout(fig, 60 + 32 * max(len(items), 3), barmode="stack")
    fig.update_layout(legend_traceorder="normal")
    return fig


def quarantine_reasons(reasons: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for index, source in enumerate(sorted(set(reasons["source"]))):
        part = reasons[reasons["source"] == source]
        fig.add_trace(
            go.Bar(
                y=part["reason"],
                x=part["rows"],
                name="Kafka messages" if source == "kafka" else f"{source.upper()} rows",
                orientation="h",
                marker_color=SERIES_COLORS[(index + 3) % len(SERIES_COLORS)],
                hovertemplate="%{y}: %{x:,}<extra>" + source + "</extra>",
            )
        )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="rows quarantined", rangemode="tozero")
    return _layout(fig, 80 + 30 * max(reasons["reason"].nunique(), 3), barmode="stack")


def kafka_lag(raw_events: pd.DataFrame) -> go.Figure:
    """Consumer lag after each raw_events run: what the sensor still had to schedule."""
    part = raw_events.dropna(subset=["lag"]).sort_values("materialized_at")
    fig = go.Figure(
        go.Scatter(
            x=part["materialized_at"],
            y=part["lag"],
            mode="lines+markers",
            line={"color": SERIES_COLORS[3], "width": 2},
            marker={"size": 5},
            fill="tozeroy",
            hovertemplate="%{x|%H:%M:%S} UTC: %{y:,} messages behind<extra></extra>",
        )
    )
    fig.update_yaxes(title="messages behind", rangemode="tozero")
    return _layout(fig, 260, showlegend=False)


def model_metrics(metrics: pd.DataFrame, metric: str, promoted: int | None) -> go.Figure:
    """One metric across registry versions: validation (dashed) and test, per model."""
    part = metrics[metrics["metric"] == metric]
    fig = go.Figure()
    series = sorted(
        {(s, m) for s, m in zip(part["split"], part["model"], strict=True)}, key=lambda sm: (sm[1], sm[0])
    )
    models = sorted({m for _, m in series})
    for split, model in series:
        rows = part[(part["split"] == split) & (part["model"] == model)].sort_values("version")
        color = SERIES_COLORS[models.index(model) % len(SERIES_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=[f"v{v}" for v in rows["version"]],
                y=rows["value"],
                name=f"{model} ({split})",
                mode="lines+markers",
                line={"color": color, "dash": "dash" if split == "validation" else "solid", "width": 2},
                marker={"size": 8, "symbol": "circle-open" if split == "validation" else "circle"},
                customdata=rows[["status"]].to_numpy(),
                hovertemplate="%{x}: %{y:.4f} (%{customdata[0]})<extra>" + f"{model} {split}" + "</extra>",
            )
        )
    if promoted is not None:
        fig.add_vline(x=f"v{promoted}", line={"color": "#54A24B", "width": 1, "dash": "dot"})
        fig.add_annotation(
            x=f"v{promoted}",
            y=1,
            yref="paper",
            text="promoted",
            showarrow=False,
            yanchor="bottom",
            font={"color": "#54A24B"},
        )
    versions = sorted(set(part["version"]))
    fig.update_xaxes(
        title="model version",
        type="category",
        categoryorder="array",
        categoryarray=[f"v{v}" for v in versions],
    )
    fig.update_yaxes(title=metric, rangemode="tozero")
    return _layout(fig, 340)


def funnel(steps: list[tuple[str, int]]) -> go.Figure:
    """The view -> cart -> purchase funnel: sessions at each nested step, with the share of the first step and
    of the step before it."""
    fig = go.Figure(
        go.Funnel(
            y=[label for label, _ in steps],
            x=[n for _, n in steps],
            textinfo="value+percent initial+percent previous",
            marker={"color": [EVENT_COLORS["view"], EVENT_COLORS["addtocart"], EVENT_COLORS["transaction"]]},
            hovertemplate="%{y}: %{x:,} sessions<extra></extra>",
        )
    )
    return _layout(fig, 300, showlegend=False)


def sessions_over_time(frame: pd.DataFrame) -> go.Figure:
    """Sessions per period (bars) over the bounce rate, the median session length and the cart abandonment
    rate (lines), each on its own row."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            "sessions",
            "bounce rate and cart abandonment rate",
            "median session length (minutes)",
        ),
    )
    x = frame["period_start"]
    fig.add_trace(
        go.Bar(x=x, y=frame["sessions"], name="sessions", marker_color=SERIES_COLORS[0]), row=1, col=1
    )
    fig.add_trace(
        go.Scatter(x=x, y=frame["bounce_rate"], name="bounce rate", line={"color": SERIES_COLORS[3]}),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x, y=frame["cart_abandonment_rate"], name="cart abandonment", line={"color": SERIES_COLORS[1]}
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(x=x, y=frame["median_minutes"], name="median length", line={"color": SERIES_COLORS[4]}),
        row=3,
        col=1,
    )
    fig.update_yaxes(tickformat=".0%", row=2, col=1, rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=3, col=1)
    return _layout(fig, 560)


def retention_heatmap(retention: pd.DataFrame) -> go.Figure:
    """Cohorts (first-seen week) by weeks after: the share of the cohort active that week."""
    grid = retention.pivot(index="cohort_week", columns="weeks_after", values="active_share").sort_index()
    sizes = retention[retention["weeks_after"] == 0].set_index("cohort_week")["cohort_visitors"]
    labels = [f"{pd.Timestamp(w):%Y-%m-%d} ({int(sizes.get(w, 0)):,})" for w in grid.index]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[f"+{int(c)}" for c in grid.columns],
            y=labels,
            colorscale="Blues",
            zmin=0,
            zmax=max(0.05, float(retention.loc[retention["weeks_after"] > 0, "active_share"].max() or 0)),
            text=[[("" if pd.isna(v) else f"{v:.1%}") for v in row] for row in grid.to_numpy()],
            texttemplate="%{text}",
            hovertemplate="cohort %{y}, week %{x}: %{z:.2%} active<extra></extra>",
            colorbar={"tickformat": ".0%"},
        )
    )
    fig.update_xaxes(title="weeks after the first-seen week")
    fig.update_yaxes(title="cohort (visitors)", autorange="reversed")
    return _layout(fig, 80 + 28 * len(grid), showlegend=False)


def conversion_bars(items: pd.DataFrame, label: str) -> go.Figure:
    """Sessions that viewed each item (category) and those of them that bought it, with the rate."""
    names = [str(v) for v in items[label]]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=names,
            x=items["sessions_viewed"],
            orientation="h",
            name="sessions that viewed it",
            marker_color=EVENT_COLORS["view"],
        )
    )
    fig.add_trace(
        go.Bar(
            y=names,
            x=items["sessions_viewed_bought"],
            orientation="h",
            name="...and bought it",
            marker_color=EVENT_COLORS["transaction"],
            text=[("" if pd.isna(r) else f"{r:.1%}") for r in items["view_to_purchase_rate"]],
            textposition="outside",
            cliponaxis=False,
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="sessions")
    return _layout(fig, 60 + 26 * max(len(items), 3), barmode="overlay")
