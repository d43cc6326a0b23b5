"""The run report's page (report/page.py), without Spark: what each section shows, escaping, the
embedded pictures, and the reasons an empty section gives."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from insarlake.hotspots.maps import plot_hotspot_map, plot_hotspot_series
from insarlake.report.page import ReportContent, number, render_report, text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tables(HTMLParser):
    """The cells of every table by id, the img sources and the p.empty texts of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.empty = {}, [], []
        self._table = self._row = self._cell = None
        self._in_empty = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "p" and attrs.get("class") == "empty":
            self._in_empty = True
            self.empty.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._in_empty = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_empty:
            self.empty[-1] += data


def _parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def _content(**changes) -> ReportContent:
    alerts = pd.DataFrame({"rank": [1, 2], "kind": ["new", "accelerating"], "severity": ["high", "medium"],
                           "track_id": ["abcd1234-3", "<script>alert(1)</script>"], "hotspot_id": [3.0, np.nan],
                           "center_lon": [11.0, 11.1], "center_lat": [44.0, 44.1], "assets": [2, 0],
                           "asset_length_m": [812.4, 0.0], "linked_tracks": [[], ["abcd1234-1", "abcd1234-2"]],
                           "evidence": [{"z_min": 2.5, "new_rate_mm_yr": -30.0}, {}]})
    hotspots = pd.DataFrame({"hotspot_id": [3], "track_id": ["abcd1234-3"], "status": ["new"], "n_pixels": [120],
                             "area_km2": [1.234], "mean_velocity": [-12.34], "velocity_z": [8.0],
                             "acceleration_mm_yr2": [np.nan], "center_lon": [11.0], "center_lat": [44.0]})
    base = dict(dataset="demo", run_id="0123456789abcdef", job="pipeline", started="2026-12-02 00:00:00 UTC",
                lake="/lake", headline={"pixels analysed": "5,000"}, alerts=alerts, hotspots=hotspots,
                classifiers=pd.DataFrame({"model": ["lstm"], "target": ["cluster"], "accuracy": [0.9123],
                                          "classes": [4], "support": [800], "chosen": ["yes"]}),
                seconds={"ingest": 12.5, "alerts": 3.25}, counts={"pixels": 5000, "alerts": 2})
    base.update(changes)
    return ReportContent(**base)


def test_each_table_holds_its_rows_formatted_and_escaped():
    page = render_report(_content())
    parsed = _parse(page)
    header, *rows = parsed.tables["alerts-table"]
    assert header[:4] == ["rank", "kind", "severity", "track"]
    assert [r[:5] for r in rows] == [["1", "new", "high", "abcd1234-3", "3"],
                                     ["2", "accelerating", "medium", "<script>alert(1)</script>", ""]]
    assert rows[0][-1] == "new_rate_mm_yr -30, z_min 2.5" and rows[1][-2] == "abcd1234-1, abcd1234-2"
    assert "<script>" not in page and "&lt;script&gt;" in page              # a value never becomes markup
    assert '<tr class="high">' in page
    _, hotspot = parsed.tables["hotspots-table"]
    assert hotspot[:7] == ["3", "abcd1234-3", "new", "120", "1.23", "-12.3", "8.0"] and hotspot[7] == ""
    assert parsed.tables["stages-table"][1:] == [["ingest", "12.5", ""], ["alerts", "3.2", ""]]
    assert parsed.tables["counts-table"][1:] == [["pixels", "5,000"], ["alerts", "2"]]
    assert parsed.tables["classifier-table"][1][:3] == ["lstm", "cluster", "0.912"]


def test_pictures_are_embedded_as_png_and_empty_sections_say_why(tmp_path):
    pixels = pd.DataFrame({"lon": [11.0, 11.01, 11.2], "lat": [44.0, 44.01, 44.2], "hotspot_id": [3, 3, -1]})
    hotspots = pd.DataFrame({"hotspot_id": [3], "retained": [True], "center_lon": [11.005], "center_lat": [44.005],
                             "mean_velocity": [-12.0], "geometry": ["POLYGON ((11 44, 11.01 44, 11.01 44.01, 11 44))"]})
    alerts = pd.DataFrame({"center_lon": [11.005, None], "center_lat": [44.005, None], "kind": ["new", "vanished"],
                           "severity": ["high", "low"]})
    map_png = plot_hotspot_map(pixels, hotspots, tmp_path / "map.png", "t", alerts=alerts).read_bytes()
    dates = list(pd.date_range("2020-01-01", periods=6, freq="12D").date)
    series = pd.DataFrame({"hotspot_id": [3], "mean_disp_mm": [np.linspace(0, -5, 6)], "mean_velocity": [-12.0],
                           "n_pixels": [2], "onset_index": [1], "peak_index": [5]})
    ahead = pd.DataFrame({"hotspot_id": [3, 3], "date": [dates[-1] + pd.Timedelta(days=12).to_pytimedelta(),
                                                         dates[-1] + pd.Timedelta(days=24).to_pytimedelta()],
                          "p05": [-7.0, -8.0], "p50": [-6.0, -6.5], "p95": [-5.0, -5.0]})
    series_png = plot_hotspot_series(dates, series, tmp_path / "s.png", "t", forecasts=ahead).read_bytes()
    page = render_report(_content(map_png=map_png, series_png=series_png, alerts=pd.DataFrame(),
                                  classifiers=pd.DataFrame(),
                                  missing={"alerts": "no alert: first tracked run",
                                           "classifier": "the classify stage did not run in this run"}))
    parsed = _parse(page)
    decoded = [base64.b64decode(src.split(",", 1)[1]) for src in parsed.images]
    assert [src.split(",")[0] for src in parsed.images] == ["data:image/png;base64"] * 2
    assert decoded == [map_png, series_png] and all(d.startswith(PNG_MAGIC) for d in decoded)
    assert "alerts-table" not in parsed.tables and "classifier-table" not in parsed.tables
    assert {"no alert: first tracked run", "the classify stage did not run in this run"} <= set(parsed.empty)
    assert re.search(r"<title>insarlake run 01234567 on demo</title>", page)


def test_formatters_leave_missing_values_blank():
    assert [number(".1f")(v) for v in (1.25, None, float("nan"), float("inf"), "x")] == ["1.2", "", "", "", ""]
    assert number("d")(3.0) == "3" and number(",d")(12345.0) == "12,345"
    assert [text(v) for v in (None, float("nan"), ["a", "b"], "x")] == ["", "", "a, b", "x"]
