"""The run report as one self-contained HTML page (pure: pandas in, a string out; no Spark).

The pictures are embedded as base64 PNG data URIs and the style sheet is inline, so the file opens
anywhere (a browser, an e-mail, a notebook) without the lake. The page has no script. Its sections
and their element ids, which the browser test reads:

    #summary      the run: dataset, run id, job, start, lake, headline numbers
    #map          hotspot map: pixels, ellipses, alerts (img)
    #alerts       table#alerts-table: one row per alert of the run, by rank
    #hotspots     table#hotspots-table: one row per retained hotspot, with its track
    #series       mean series per hotspot with the forecast and its 90 % interval (img)
    #classifier   table#classifier-table (one row per classifier) and the confusion matrix (img)
    #stages       table#stages-table: seconds per stage
    #counts       table#counts-table: rows written per table

A section whose stage did not run (or wrote nothing) says so in a ``p.empty`` instead of a table
or picture.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

# one column of a table: (column of the frame, header, formatter of one value)
Column = tuple[str, str, Callable[[object], str]]


def number(spec: str) -> Callable[[object], str]:
    """Formatter of a number with ``spec`` ('' when missing or not finite)."""
    def fmt(value) -> str:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return ""
        if not math.isfinite(v):
            return ""
        return format(round(v), spec) if spec.endswith("d") else format(v, spec)
    return fmt


def text(value) -> str:
    """Formatter of any value as text ('' when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if items and all(isinstance(i, tuple) and len(i) == 2 for i in items):     # a map's (key, value) pairs
            return ", ".join(f"{k} {number('.3g')(v)}" for k, v in sorted(items))
        return ", ".join(map(str, items))
    return str(value)


ALERT_COLUMNS: list[Column] = [
    ("rank", "rank", number("d")), ("kind", "kind", text), ("severity", "severity", text),
    ("track_id", "track", text), ("hotspot_id", "hotspot", number(".0f")),
    ("center_lon", "lon (deg)", number(".5f")), ("center_lat", "lat (deg)", number(".5f")),
    ("assets", "assets", number(".0f")), ("asset_length_m", "asset length (m)", number(".0f")),
    ("linked_tracks", "linked tracks", text), ("evidence", "evidence", text)]

HOTSPOT_COLUMNS: list[Column] = [
    ("hotspot_id", "hotspot", number("d")), ("track_id", "track", text), ("status", "status", text),
    ("n_pixels", "pixels", number("d")), ("area_km2", "area (km²)", number(".2f")),
    ("mean_velocity", "mean velocity (mm/yr)", number(".1f")), ("velocity_z", "velocity z", number(".1f")),
    ("acceleration_mm_yr2", "acceleration (mm/yr²)", number(".2f")),
    ("center_lon", "lon (deg)", number(".5f")), ("center_lat", "lat (deg)", number(".5f")),
    ("onset_date", "onset", text), ("first_seen_date", "first seen", text)]

CLASSIFIER_COLUMNS: list[Column] = [
    ("model", "model", text), ("target", "target", text), ("accuracy", "held-out accuracy", number(".3f")),
    ("classes", "classes", number("d")), ("support", "held-out pixels", number("d")), ("chosen", "labels `classes`", text)]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 78rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
nav a { margin-right: .8rem; } .meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .45rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text { text-align: left; }
tr.high td { background: #fde8e8; } tr.medium td { background: #fff1df; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
p.empty { color: #777; font-style: italic; } .bar { background: #4a7ab5; height: .7rem; display: inline-block; }
dl.headline { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; }
dl.headline dt { color: #555; } dl.headline dd { margin: 0; font-weight: 600; }
"""


@dataclass
class ReportContent:
    """What one run's report shows. Frames may be empty and pictures None: the section then says
    ``missing[section]`` (why it is empty)."""
    dataset: str
    run_id: str
    job: str
    started: str                      # ISO time the run started (UTC)
    lake: str
    headline: dict[str, str]          # label -> value, shown first
    alerts: pd.DataFrame              # ALERT_COLUMNS, by rank
    hotspots: pd.DataFrame            # HOTSPOT_COLUMNS, retained hotspots
    classifiers: pd.DataFrame         # CLASSIFIER_COLUMNS
    seconds: Mapping[str, float]      # stage -> s
    counts: Mapping[str, int]         # table -> rows written
    map_png: bytes | None = None
    series_png: bytes | None = None
    confusion_png: bytes | None = None
    missing: dict[str, str] = field(default_factory=dict)   # section -> why it has nothing


def _img(png: bytes | None, alt: str, reason: str) -> str:
    if not png:
        return f'<p class="empty">{html.escape(reason)}</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(frame: pd.DataFrame, columns: Sequence[Column], table_id: str, row_class: str | None = None) -> str:
    """``frame`` as an HTML table of ``columns`` (those the frame lacks are left out); numbers right-
    aligned, text left; ``row_class``: a column whose value becomes each row's class."""
    shown = [c for c in columns if c[0] in frame.columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in shown)
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for name, _, fmt in shown:
            value = record[name]
            align = "" if fmt is not text else ' class="text"'
            cells.append(f"<td{align}>{html.escape(fmt(value))}</td>")
        cls = f' class="{html.escape(str(record[row_class]))}"' if row_class and row_class in record else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def _table_or_reason(content: ReportContent, section: str, frame: pd.DataFrame, columns, table_id: str,
                     row_class: str | None = None) -> str:
    if len(frame):
        return html_table(frame, columns, table_id, row_class)
    return f'<p class="empty">{html.escape(content.missing.get(section, "none in this run"))}</p>'


def _stages(seconds: Mapping[str, float]) -> str:
    if not seconds:
        return '<p class="empty">no stage recorded</p>'
    longest = max(max(seconds.values()), 1e-9)
    rows = "".join(f'<tr><td class="text">{html.escape(name)}</td><td>{sec:.1f}</td>'
                   f'<td class="text"><span class="bar" style="width:{12 * sec / longest:.2f}rem"></span></td></tr>'
                   for name, sec in seconds.items())
    return (f'<table id="stages-table"><thead><tr><th>stage</th><th>seconds</th><th></th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            '<p class="meta">Up to the report itself; the run\'s row in <code>runs</code> has every stage.</p>')


def render_report(content: ReportContent) -> str:
    """The report page (HTML5, UTF-8) of ``content``."""
    esc = html.escape
    title = f"insarlake run {content.run_id[:8]} on {content.dataset}"
    headline = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in content.headline.items())
    sections = [
        _section("summary", "Run", f'<p class="meta">dataset <b>{esc(content.dataset)}</b> · run '
                 f'<code>{esc(content.run_id)}</code> · job {esc(content.job)} · started {esc(content.started)} · '
                 f'lake <code>{esc(content.lake)}</code></p><dl class="headline">{headline}</dl>'),
        _section("map", "Hotspots and alerts", _img(content.map_png, "map of the hotspots, their ellipses and alerts",
                                                    content.missing.get("map", "no map"))),
        _section("alerts", "Alerts", _table_or_reason(content, "alerts", content.alerts, ALERT_COLUMNS,
                                                      "alerts-table", row_class="severity")),
        _section("hotspots", "Retained hotspots", _table_or_reason(content, "hotspots", content.hotspots,
                                                                   HOTSPOT_COLUMNS, "hotspots-table")),
        _section("series", "Series and forecasts", _img(content.series_png, "mean series of each hotspot with the "
                                                        "forecast and its 90 % interval",
                                                        content.missing.get("series", "no series"))
                 + '<p class="meta">Mean displacement (mm) of each hotspot\'s pixels; the forecast is the mean over '
                   "its pixels of their median, the band the mean of their 5 % and 95 % quantiles.</p>"),
        _section("classifier", "Classifier", _table_or_reason(content, "classifier", content.classifiers,
                                                              CLASSIFIER_COLUMNS, "classifier-table")
                 + (_img(content.confusion_png, "confusion matrix of the chosen classifier", "")
                    if content.confusion_png else "")),
        _section("stages", "Time per stage", _stages(content.seconds)),
        _section("counts", "Counts (rows written, inputs, parts)", html_table(pd.DataFrame(
            {"table": list(content.counts), "rows": list(content.counts.values())}),
            [("table", "count", text), ("rows", "value", number(",d"))], "counts-table")),
    ]
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in
                  ("map", "alerts", "hotspots", "series", "classifier", "stages", "counts"))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1><nav>{nav}</nav>{''.join(sections)}</body></html>\n")
