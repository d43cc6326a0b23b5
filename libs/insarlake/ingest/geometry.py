"""Viewing geometry of EGMS input (pure, no Spark): track, burst, swath and release from the file
name, pass direction from each row's LOS unit vector, and the dataset each geometry is analysed as.

An EGMS L2b file is named ``EGMS_L2b_<track>_<burst>_IW<swath>_<pol>_<y1>_<y2>_<version>``
(e.g. ``EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip``): track is the Sentinel-1 relative orbit
(1..175), burst the burst id within the track, y1..y2 the release's years. Points of one track
share the acquisition dates and the line of sight (up to the incidence angle across the swath);
points of two tracks do not, so a dataset holding several tracks is analysed one track at a time.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

import numpy as np

from insarlake.errors import InputError
from insarlake.names import dataset_problem

_EGMS_NAME = re.compile(
    r"EGMS_L2[ab]_(?P<track>\d{1,3})_(?P<burst>\d{1,5})_IW(?P<swath>[1-3])_[A-Z]{2}_"
    r"(?P<y1>\d{4})_(?P<y2>\d{4})_(?P<version>\d+)(?:\.[A-Za-z]+)*$")
# Sentinel-1 relative orbits
_TRACKS = range(1, 176)


@dataclass(frozen=True)
class FileGeometry:
    """What an EGMS file name says about its points (every field None for other names)."""
    track: int | None = None          # relative orbit 1..175
    burst: str | None = None          # burst id, as in the name ('0845')
    swath: str | None = None          # 'IW1' .. 'IW3'
    release: str | None = None        # the release's years, '2020-2024'
    release_version: int | None = None


def file_geometry(source: str) -> FileGeometry:
    """The geometry of an input source ``path`` or ``archive.zip!member.csv``: from the member's
    name, else from the archive's. A name that is not an EGMS L2 name gives FileGeometry()."""
    for part in reversed(source.split("!")):
        m = _EGMS_NAME.match(posixpath.basename(part.replace("\\", "/")))
        if m and int(m.group("track")) in _TRACKS:
            return FileGeometry(int(m.group("track")), m.group("burst"), f"IW{m.group('swath')}",
                                f"{m.group('y1')}-{m.group('y2')}", int(m.group("version")))
    return FileGeometry()


def pass_direction(los_east: np.ndarray) -> np.ndarray:
    """'ascending' / 'descending' / None per point from the east component of its LOS unit vector
    (ground to satellite, EGMS convention). Sentinel-1 looks right: on an ascending pass (heading
    north) the satellite is west of the ground, so los_east < 0; on a descending pass los_east > 0."""
    east = np.asarray(los_east, dtype=np.float64)
    out = np.full(east.shape, None, dtype=object)
    out[east < 0] = "ascending"
    out[east > 0] = "descending"
    return out


def geometry_key(track: int | None) -> str:
    """The name of a track's geometry, 't022'; 'other' for files with no track in their name."""
    return "other" if track is None else f"t{track:03d}"


def geometry_datasets(dataset: str, tracks: list[int | None], split: bool) -> dict[int | None, str]:
    """The dataset each track (None: files without a track in their name) is analysed as.

    One track, or ``split`` false: everything is ``dataset``. Several: ``<dataset>-t022``,
    ``<dataset>-t117``, ``<dataset>-other``. InputError when such a name is not a valid dataset
    name (too long)."""
    tracks = sorted(set(tracks), key=lambda t: (t is None, t or 0))
    if not split or len(tracks) <= 1:
        return {t: dataset for t in tracks}
    out = {}
    for track in tracks:
        name = f"{dataset}-{geometry_key(track)}"
        problem = dataset_problem(name)
        if problem:
            raise InputError(f"dataset {dataset!r}: the input holds {len(tracks)} tracks and the "
                             f"dataset of track {geometry_key(track)}, {name!r}, {problem}")
        out[track] = name
    return out
