"""ISMN in-situ soil moisture: archives (zipped or unpacked) in both ISMN text formats.

ISMN distributes one text file (`.stm`) per sensor and variable, in two formats:
"header+values" (one header line with network, station, lat, lon, elevation, depth range and
sensor, then `date time value flag provider_flag` lines) and "CEOP separated" (every line
repeats the metadata; 15 fields). Line endings vary (CRLF, LF, mixed, CR-only).

We read the files ourselves, with the format detection of the `ismn` package's `DataFile`
(whose variable codes we use): network and station from the header line (`DataFile` takes them
from the top folder and the file name, where ISMN replaces or drops `_`: docs/real-data.md),
variable, sensor and (CEOP) depths from the file name. We do not use its readers because
(a) `ISMN_Interface` requires a network/station folder hierarchy (real downloads re-packed by
users, and the `format_*` samples, have no station level), writes a `python_metadata` cache into
the archive folder (archives are often read-only) and stops at the first broken file; (b)
`DataFile` fails on a whole file for one garbage line (a download cut off mid-line, an editor's
stray text) and extracts zip members to temporary files. Here a line that does not parse costs
that line only (counted per file), a broken file is skipped and counted, and zip members are
read in memory. A damaged zip (truncated download) is an error naming it before anything else
is read.
"""

from __future__ import annotations

import functools
import io
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr

from somojax.errors import InputDataError

DATA_SUFFIX = ".stm"
SM_VARIABLE = "soil_moisture"
_DATE = re.compile(r"\d{4}/\d{2}/\d{2}")
# format -> (fields per value line, columns of date, time, value, ISMN flag, provider flag, header lines)
_LAYOUT = {"header_values": (5, [0, 1, 2, 3, 4], 1), "ceop_sep": (15, [0, 1, 12, 13, 14], 0)}
# what reading a damaged zip member raises
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


@dataclass(frozen=True)
class Root:
    """A folder or an opened zip holding ISMN files (paths inside it are posix)."""

    path: Path
    zip: zipfile.ZipFile | None = None

    def read(self, relpath: str, limit: int = -1) -> bytes:
        """The bytes of a file (its first `limit` bytes when limit >= 0)."""
        if self.zip is not None:
            with self.zip.open(relpath) as f:
                return f.read(limit)
        with open(self.path / relpath, "rb") as f:
            return f.read(limit)

    def where(self, relpath: str) -> str:
        return f"{self.path}:{relpath}" if self.zip is not None else str(self.path / relpath)


@dataclass
class SensorFile:
    """One ISMN data file: where it is and the metadata of its sensor.

    Depths are in metres below the surface, as ISMN writes them.
    """

    archive: str  # folder or zip the file lives in
    path: str  # path inside the archive (posix)
    network: str
    station: str
    latitude: float
    longitude: float
    elevation: float
    depth_from: float
    depth_to: float
    sensor: str
    variable: str
    format: str  # "header_values" or "ceop_sep"

    @property
    def key(self) -> tuple:
        """Identity of the sensor (several files of one sensor are concatenated)."""
        return (self.network, self.station, self.sensor, round(self.depth_from, 4), round(self.depth_to, 4))

    @property
    def label(self) -> str:
        """`network/station/sensor@0.05-0.05m`, used in reports and provenance."""
        return f"{self.network}/{self.station}/{self.sensor}@{self.depth_from:g}-{self.depth_to:g}m"

    @property
    def where(self) -> str:
        return f"{self.archive}:{self.path}" if self.archive.endswith(".zip") else str(Path(self.archive) / self.path)


@dataclass
class IsmnScan:
    """What an archive holds: readable soil-moisture files, skipped files and why."""

    files: list[SensorFile]
    skipped: list[dict]  # {"file": ..., "reason": ...}
    other_variables: dict[str, int]  # ISMN variable code (ts, p, ...) -> number of files not read


def _open_zip(path: Path) -> Root:
    try:
        z = zipfile.ZipFile(path)
        bad = None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        bad = e
    if bad is not None:
        raise InputDataError(
            f"{path}: not a readable zip archive ({bad}); the download may be incomplete or damaged: download it again "
            "(or unpack what you can and point data.ismn at the folder)"
        )
    return Root(path, z)


def _root(archive: str) -> Root:
    """The root of a `SensorFile.archive`; zips are opened once per process (and again when the
    file changes on disk)."""
    p = Path(archive)
    if not (p.is_file() and p.suffix.lower() == ".zip"):
        return Root(p)
    st = p.stat()
    return _zip_root(archive, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _zip_root(archive: str, mtime_ns: int, size: int) -> Root:
    return _open_zip(Path(archive))


def _roots(path: Path) -> list[tuple[Root, list[str]]]:
    """(root, data-file paths inside it) for a folder, a zip, a single file, or zips in a folder."""
    if not path.exists():
        raise InputDataError(f"ISMN archive {path} does not exist (data.ismn)")
    if path.is_file() and path.suffix.lower() == ".zip":
        root = _open_zip(path)
        names = sorted(n for n in root.zip.namelist() if n.lower().endswith(DATA_SUFFIX) and not n.endswith("/"))
        return [(root, names)]
    if path.is_file():
        return [(Root(path.parent), [path.name])]
    out: list[tuple[Root, list[str]]] = []
    names = sorted(
        PurePosixPath(Path(dp, f).relative_to(path)).as_posix()
        for dp, _, fs in os.walk(path)
        for f in fs
        if f.lower().endswith(DATA_SUFFIX)
    )
    if names:
        out.append((Root(path), names))
    for dp, _, fs in sorted(os.walk(path)):
        for f in sorted(fs):
            if f.lower().endswith(".zip"):
                out += _roots(Path(dp) / f)
    return out


def _name_parts(relpath: str) -> list[str]:
    """ISMN file names are `<net>_<net>_<station>_<var>_<from>_<to>_<sensor>_<start>_<end>.stm`."""
    return PurePosixPath(relpath).name.split("_")


def _variable_code(relpath: str) -> str:
    parts = _name_parts(relpath)
    return parts[3] if len(parts) > 3 else "?"


def _lines(raw: bytes) -> list[bytes]:
    """The non-empty lines, for any line ending (CR, LF, CRLF, mixed)."""
    return [ln for ln in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n") if ln.strip()]


def _diagnose(lines: list[bytes]) -> str:
    """A one-line description of a file that is not in an ISMN format."""
    if not lines:
        return "the file is empty"
    first = lines[0].decode("ascii", "replace").strip()
    return f"{len(lines)} non-empty line(s) in the first 4 kB; the first line {first[:60]!r} has {len(first.split())} field(s)"


def _metadata(tokens: list[str], parts: list[str]) -> tuple[str, dict]:
    """(format, metadata) from the first line's tokens and the file-name parts, as ISMN's
    `DataFile` reads them; raises ValueError/IndexError when they are not ISMN's."""
    sensor = "_".join(parts[6:-2]) if len(parts) > 9 else parts[6]
    if len(tokens) == 15 and _DATE.fullmatch(tokens[0]):
        lat, lon, elev = (float(t) for t in tokens[7:10])
        return "ceop_sep", dict(
            network=tokens[5],
            station=tokens[6],
            latitude=lat,
            longitude=lon,
            elevation=elev,
            depth_from=float(parts[4]),
            depth_to=float(parts[5]),
            sensor=sensor,
        )
    if len(tokens) < 9:
        raise ValueError("not a header line")
    lat, lon, elev, d0, d1 = (float(t) for t in tokens[3:8])
    return "header_values", dict(
        network=tokens[1],
        station=tokens[2],
        latitude=lat,
        longitude=lon,
        elevation=elev,
        depth_from=d0,
        depth_to=d1,
        sensor=sensor,
    )


def read_metadata(root: Root, relpath: str) -> SensorFile:
    """Metadata of one ISMN data file; raises `InputDataError` naming the file if unreadable."""
    from ismn.const import VARIABLE_LUT

    where = root.where(relpath)
    try:
        lines = _lines(root.read(relpath, 4096))
    except _ZIP_ERRORS as e:
        raise InputDataError(
            f"{where}: cannot read this file ({type(e).__name__}: {e}); the archive may be damaged"
        ) from None
    parts = _name_parts(relpath)
    try:
        tokens = lines[0].decode("ascii", "replace").split()
        fmt, meta = _metadata(tokens, parts)
    except (IndexError, ValueError):
        raise InputDataError(
            f"{where}: not a readable ISMN data file ({_diagnose(lines)}); expected the 'header+values' format (a header "
            "line of 9 fields, then lines 'date time value flag provider_flag') or the 'CEOP separated' format (15 fields "
            "per line), in a file named <network>_<network>_<station>_<variable>_<from>_<to>_<sensor>_<start>_<end>.stm"
        ) from None
    lat, lon, d0, d1 = meta["latitude"], meta["longitude"], meta["depth_from"], meta["depth_to"]
    if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 360):
        raise InputDataError(f"{where}: station coordinates ({lat}, {lon}) are not valid latitude/longitude")
    if not (np.isfinite(d0) and np.isfinite(d1)) or d1 < d0 or d0 < 0:
        raise InputDataError(f"{where}: sensor depth range {d0}..{d1} m is not valid")
    variable = VARIABLE_LUT.get(parts[3], parts[3])
    return SensorFile(archive=str(root.path), path=relpath, variable=variable, format=fmt, **meta)


def scan_ismn(path: str | os.PathLike, variable: str = SM_VARIABLE) -> IsmnScan:
    """Lists the data files of an ISMN archive and reads their metadata.

    Files of other variables (soil temperature `ts`, precipitation `p`, ...) are counted and not
    read; unreadable files are listed in `skipped` with the reason and the scan continues. Raises
    `InputDataError` when the archive does not exist, is a damaged zip, or holds no data file.
    """
    path = Path(path)
    files: list[SensorFile] = []
    skipped: list[dict] = []
    other: dict[str, int] = {}
    n_total = 0
    for root, names in _roots(path):
        for rel in names:
            n_total += 1
            code = _variable_code(rel)
            if code not in ("sm", "?"):
                other[code] = other.get(code, 0) + 1
                continue
            try:
                sf = read_metadata(root, rel)
            except InputDataError as e:
                skipped.append({"file": root.where(rel), "reason": str(e)})
                continue
            if sf.variable != variable:
                other[sf.variable] = other.get(sf.variable, 0) + 1
                continue
            files.append(sf)
    if n_total == 0:
        raise InputDataError(
            f"{path}: no ISMN data files (*{DATA_SUFFIX}) found; point data.ismn at an ISMN download "
            "(the zip or the folder it unpacks to)"
        )
    return IsmnScan(files, skipped, other)


@dataclass
class FileValues:
    """The values of one data file and the lines that did not parse."""

    values: pd.DataFrame  # indexed by UTC time: sm [m3 m-3], ismn_flag, provider_flag
    lines: int  # value lines in the file (parsed or not)
    unparseable: int  # lines that are not `date time value flag [provider_flag]` (CEOP: 14 or 15 fields)
    first_unparseable: str = ""  # the first such line, shortened

    @property
    def problem(self) -> str:
        """A one-line description of the unparseable lines (empty when there are none)."""
        if not self.unparseable:
            return ""
        return f"{self.unparseable:,} of {self.lines:,} value line(s) do not parse and were skipped (the first: {self.first_unparseable!r})"


def parse_values(raw: bytes, fmt: str) -> FileValues:
    """The values of an ISMN file's bytes in format `fmt` ("header_values" or "ceop_sep").

    A value line parses when it has the format's fields (the provider's flag, the last, may be
    missing: real files have such lines), a date and time `YYYY/MM/DD HH:MM`, a finite number as
    the value and the ISMN flag; any other line (two lines run together, a line cut off, text) is
    counted and skipped.
    """
    n_fields, cols, n_header = _LAYOUT[fmt]
    extra = n_fields  # one column more than the format has: filled by a line with extra fields
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip()
    body = text.partition(b"\n")[2] if n_header else text
    # `usecols` makes pandas return one row per non-blank line (extra fields are cut off, never
    # the line); a first line with every column makes sure the columns exist
    first_line = (
        b" ".join(b"0" if c == cols[2] else b"-" for c in range(n_fields + 1)) + b"\n"
    )  # a number as value keeps that column numeric
    df = pd.read_csv(
        io.BytesIO(first_line + body),
        sep=r"\s+",
        header=None,
        names=range(n_fields + 1),
        usecols=cols + [extra],
        dtype={c: object for c in cols + [extra] if c != cols[2]},
        engine="c",
        low_memory=False,
    ).iloc[1:]
    shaped = (df[extra].isna() & df[cols[3]].notna()).to_numpy()
    df = df[cols].set_axis(["date", "time", "sm", "ismn_flag", "provider_flag"], axis=1)
    sm = pd.to_numeric(df["sm"], errors="coerce").to_numpy(np.float64)
    time = pd.to_datetime(df["date"] + " " + df["time"], format="%Y/%m/%d %H:%M", errors="coerce")
    ok = shaped & np.isfinite(sm) & time.notna().to_numpy()
    values = pd.DataFrame(
        {
            "sm": sm[ok],
            "ismn_flag": df["ismn_flag"].to_numpy(object)[ok],
            "provider_flag": df["provider_flag"].fillna("").to_numpy(object)[ok],
        },
        index=pd.DatetimeIndex(time[ok], name="time"),
    )
    bad = len(df) - int(ok.sum())
    first = _lines(body)[int(np.argmin(ok))].decode("ascii", "replace").strip()[:80] if bad else ""
    return FileValues(values, len(df), bad, first)


def read_values(sf: SensorFile) -> FileValues:
    """The values of one data file (see `parse_values`). Raises `InputDataError` naming the file
    when the file cannot be read at all (a damaged zip member)."""
    try:
        raw = _root(sf.archive).read(sf.path)
    except _ZIP_ERRORS as e:
        raise InputDataError(
            f"{sf.where}: cannot read this file ({type(e).__name__}: {e}); the archive may be damaged"
        ) from None
    return parse_values(raw, sf.format)


def to_dataset(sf: SensorFile, fv: FileValues) -> xr.Dataset:
    """An xarray view of one file's values with CF attributes and the sensor metadata."""
    values = fv.values
    ds = xr.Dataset(
        {
            "sm": (
                "time",
                values["sm"].to_numpy(),
                {
                    "units": "m3 m-3",
                    "long_name": "volumetric soil moisture",
                    "standard_name": "volume_fraction_of_condensed_water_in_soil",
                },
            ),
            "ismn_flag": (
                "time",
                values["ismn_flag"].to_numpy().astype(str),
                {"long_name": "ISMN quality flag (G good, C.. D.. dubious, U unchecked)"},
            ),
            "provider_flag": (
                "time",
                values["provider_flag"].to_numpy().astype(str),
                {"long_name": "data provider's quality flag"},
            ),
        },
        coords={"time": ("time", values.index.to_numpy())},
        attrs={
            "network": sf.network,
            "station": sf.station,
            "latitude": sf.latitude,
            "longitude": sf.longitude,
            "elevation": sf.elevation,
            "depth_from": sf.depth_from,
            "depth_to": sf.depth_to,
            "depth_units": "m",
            "sensor": sf.sensor,
            "variable": sf.variable,
            "ismn_format": sf.format,
            "source_file": sf.where,
            "value_lines": fv.lines,
            "unparseable_lines": fv.unparseable,
        },
    )
    return ds


def read_ismn_file(path: str | os.PathLike, relpath: str | None = None) -> xr.Dataset:
    """Reads one ISMN data file (`path` the file, or `path` an archive and `relpath` inside it).

    Returns:
      Dataset with dim `time` (UTC) and variables `sm` [m3 m-3], `ismn_flag`, `provider_flag`;
      attributes network, station, latitude, longitude, elevation, depth_from, depth_to [m],
      sensor, ismn_format, source_file, value_lines, unparseable_lines.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"ISMN file {path} does not exist")
    if relpath is None:
        root, relpath = Root(path.parent), path.name
    else:
        root = _open_zip(path) if path.suffix.lower() == ".zip" else Root(path)
    sf = read_metadata(root, relpath)
    return to_dataset(sf, parse_values(root.read(relpath), sf.format))


def group_sensors(scan: IsmnScan) -> list[list[SensorFile]]:
    """The files of a scan grouped by sensor (same network, station, sensor type and depths),
    in a stable order."""
    groups: dict[tuple, list[SensorFile]] = {}
    for sf in scan.files:
        groups.setdefault(sf.key, []).append(sf)
    return [groups[k] for k in sorted(groups)]


@dataclass
class SensorValues:
    """One sensor's files read and concatenated in time."""

    values: pd.DataFrame | None  # None when no file could be read; column `file`: index into the sensor's files
    problems: list[dict]  # {"file", "reason"}: unreadable files, unparseable lines, duplicated time stamps
    lines: int = 0  # value lines in the files
    unparseable: int = 0  # lines that did not parse
    duplicates: int = 0  # duplicated time stamps dropped (the first value of a time is kept)


def read_sensor(members: list[SensorFile]) -> SensorValues:
    """The values of one sensor's files concatenated in time (column `file` says which file)."""
    parts, problems = [], []
    lines = unparseable = 0
    for i, sf in enumerate(members):
        try:
            fv = read_values(sf)
        except InputDataError as e:
            problems.append({"file": sf.where, "reason": str(e)})
            continue
        lines, unparseable = lines + fv.lines, unparseable + fv.unparseable
        if fv.unparseable:
            problems.append({"file": sf.where, "reason": fv.problem})
        parts.append(fv.values.assign(file=np.int32(i)))
    if not parts:
        return SensorValues(None, problems)
    vals = pd.concat(parts) if len(parts) > 1 else parts[0]
    if not vals.index.is_monotonic_increasing:
        vals = vals.sort_index(kind="stable")
    dup = vals.index.duplicated(keep="first")
    n_dup = int(dup.sum())
    if n_dup:
        problems.append(
            {"file": ", ".join(sf.where for sf in members), "reason": f"{n_dup} duplicated time stamps (first kept)"}
        )
        vals = vals[~dup]
    return SensorValues(vals, problems, lines, unparseable, n_dup)


def iter_sensors(scan: IsmnScan) -> Iterator[tuple[list[SensorFile], pd.DataFrame | None, list[dict]]]:
    """(files, values, problems) per sensor; see `group_sensors` and `read_sensor`."""
    for members in group_sensors(scan):
        sv = read_sensor(members)
        yield members, sv.values, sv.problems
