"""Hotspot tracks across runs (pure: pandas/numpy/shapely, no Spark): a run's retained hotspots are
linked to the previous run's by overlap, and each inherits the track of the previous hotspot it
overlaps most; the rest start tracks of their own.

Overlap of a previous hotspot A and a current one B: shared pixels / min(|A'|, |B|), A' the pixels
of A still in the dataset; where most of A's pixel ids are gone (a new EGMS release need not keep
point ids), the overlap of their ellipses, area(A ∩ B) / min(area A, area B).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

# statuses of a current hotspot's track row, and of a previous track that has no hotspot now:
# vanished (its ground stopped moving), absorbed (into another track's hotspot), missed (not
# detected this run, but the ground in its last ellipse still moves: kept alive, linked again by
# its ellipse)
NEW, CONTINUING, MERGED, SPLIT = "new", "continuing", "merged", "split"
VANISHED, ABSORBED, MISSED = "vanished", "absorbed", "missed"
LIVE = (NEW, CONTINUING, MERGED, SPLIT, MISSED)         # the statuses of a track a next run may continue
NONE = "none"           # the one row of a run that tracked the dataset and found no hotspot and no track


@dataclass(frozen=True)
class Tracked:
    """``current``: one row per current hotspot (hotspot_id, track_id, status, linked_tracks: the
    previous tracks it overlaps, first_seen_run); ``ended``: one row per previous track without
    a hotspot now (track_id, status vanished or absorbed, hotspot_id: the current hotspot that
    absorbed it or None, linked_tracks, first_seen_run); a vanished track whose ground still
    moves is told missed by the stage."""
    current: pd.DataFrame
    ended: pd.DataFrame


def ellipse_overlaps(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """prev_track_id, hotspot_id, overlap of every pair of intersecting ellipses; ``previous``
    holds track_id and geometry, ``current`` hotspot_id and geometry (WKT polygons lon/lat; areas compared in degrees², the same
    local scale for both)."""
    if previous.empty or current.empty:
        return pd.DataFrame({"prev_track_id": [], "hotspot_id": [], "overlap": []})
    a = shapely.from_wkt(previous["geometry"].to_numpy())
    b = shapely.from_wkt(current["geometry"].to_numpy())
    tree = shapely.STRtree(b)
    ia, ib = tree.query(a, predicate="intersects")
    shared = shapely.area(shapely.intersection(a[ia], b[ib]))
    smaller = np.minimum(shapely.area(a[ia]), shapely.area(b[ib]))
    overlap = np.divide(shared, smaller, out=np.zeros_like(shared), where=smaller > 0)
    return pd.DataFrame({"prev_track_id": previous["track_id"].to_numpy()[ia],
                         "hotspot_id": current["hotspot_id"].to_numpy()[ib], "overlap": overlap})


def pixel_overlaps(shared: pd.DataFrame, previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """prev_track_id, hotspot_id, overlap from ``shared`` (prev_track_id, hotspot_id,
    shared_pixels); ``previous`` holds track_id, present_pixels (its pixels still in the
    dataset), ``current`` hotspot_id, n_pixels."""
    out = (shared.merge(previous[["track_id", "present_pixels"]].rename(columns={"track_id": "prev_track_id"}),
                        on="prev_track_id")
           .merge(current[["hotspot_id", "n_pixels"]], on="hotspot_id"))
    smaller = np.minimum(out["present_pixels"].to_numpy(float), out["n_pixels"].to_numpy(float))
    out["overlap"] = np.divide(out["shared_pixels"].to_numpy(float), smaller, out=np.zeros(len(out)),
                               where=smaller > 0)
    return out[["prev_track_id", "hotspot_id", "overlap"]]


def links(previous: pd.DataFrame, current: pd.DataFrame, shared: pd.DataFrame, min_overlap: float,
          min_present_share: float) -> pd.DataFrame:
    """prev_track_id, hotspot_id, overlap, by ('pixels' or 'ellipse') of the pairs overlapping by
    at least ``min_overlap``. ``previous``: track_id, n_pixels, present_pixels, geometry (one row
    per live track; a missed track has no pixels: n_pixels 0); ``current``: hotspot_id, n_pixels,
    geometry; ``shared`` as in pixel_overlaps. A previous track with less than
    ``min_present_share`` of its hotspot's pixels left is linked by its ellipse."""
    n = previous["n_pixels"].to_numpy(float)
    present = (n > 0) & (previous["present_pixels"].to_numpy(float) >= min_present_share * n)
    by_pixels = pixel_overlaps(shared, previous[present], current).assign(by="pixels")
    by_ellipse = ellipse_overlaps(previous[~present], current).assign(by="ellipse")
    out = pd.concat([by_pixels, by_ellipse], ignore_index=True)
    out = out[out["overlap"] >= min_overlap]
    return out.sort_values(["overlap", "prev_track_id", "hotspot_id"], ascending=[False, True, True],
                           ignore_index=True)


def assign_tracks(previous: pd.DataFrame | None, current_ids: list[int], linked: pd.DataFrame,
                  new_track_id) -> Tracked:
    """Tracks of the current hotspots. ``previous``: the previous run's live tracks (track_id,
    first_seen_run), None on a dataset's first tracked run; ``linked`` from ``links`` (best
    overlap first); ``new_track_id(hotspot_id)`` names a track started now.

    Pairs are taken best overlap first: a current hotspot inherits the first previous track it is
    paired with that is still free. Status: new (no link), merged (linked to two or more previous
    tracks), split (one of its previous tracks is linked to two or more current hotspots), else
    continuing. A previous track nobody inherits has vanished (no link) or was absorbed (by the
    current hotspot it overlaps most)."""
    previous = previous if previous is not None else pd.DataFrame(
        {"track_id": pd.Series([], dtype=object), "first_seen_run": pd.Series([], dtype=object)})
    first_of = dict(zip(previous["track_id"], previous["first_seen_run"]))
    n_links_prev = linked.groupby("prev_track_id").size().to_dict()
    n_links_cur = linked.groupby("hotspot_id").size().to_dict()
    inherited: dict[int, str] = {}
    for track, cur_id in zip(linked["prev_track_id"], linked["hotspot_id"]):
        if cur_id not in inherited and track not in inherited.values():
            inherited[cur_id] = track
    rows = []
    for cur_id in current_ids:
        mine = linked[linked["hotspot_id"] == cur_id]
        if mine.empty:
            status = NEW
        elif n_links_cur.get(cur_id, 0) >= 2:
            status = MERGED
        elif any(n_links_prev.get(t, 0) >= 2 for t in mine["prev_track_id"]):
            status = SPLIT
        else:
            status = CONTINUING
        track = inherited.get(cur_id) or new_track_id(cur_id)
        rows.append({"hotspot_id": int(cur_id), "track_id": track, "status": status,
                     "linked_tracks": list(mine["prev_track_id"]), "first_seen_run": first_of.get(track)})
    track_now = {r["hotspot_id"]: r["track_id"] for r in rows}
    ended = []
    for track in previous["track_id"]:
        if track in inherited.values():
            continue
        mine = linked[linked["prev_track_id"] == track]
        absorbing = None if mine.empty else int(mine["hotspot_id"].iloc[0])
        ended.append({"track_id": track, "status": VANISHED if absorbing is None else ABSORBED,
                      "hotspot_id": absorbing,
                      "linked_tracks": [] if absorbing is None else [track_now[absorbing]],
                      "first_seen_run": first_of[track]})
    columns = ["hotspot_id", "track_id", "status", "linked_tracks", "first_seen_run"]
    return Tracked(pd.DataFrame(rows, columns=columns),
                   pd.DataFrame(ended, columns=["track_id", "status", "hotspot_id", "linked_tracks", "first_seen_run"]))
