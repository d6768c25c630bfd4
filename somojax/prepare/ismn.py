"""ISMN in-situ soil moisture: archives (zipped or unpacked) in both ISMN text formats.

ISMN distributes one text file (`.stm`) per sensor and variable, in two formats:
"header+values" (one header line with network, station, lat, lon, elevation, depth range and
sensor, then `date time value flag provider_flag` lines) and "CEOP separated" (every line
repeats the metadata). Line endings vary (CRLF, LF, mixed, CR-only).

We use the `ismn` package's `DataFile` reader (format detection, metadata from file name and
header, the pandas parser) file by file. We do NOT use its `ISMN_Interface`, because that
(a) requires a network/station folder hierarchy (real downloads re-packed by users, and the
`format_*` samples, have no station level), (b) writes a `python_metadata` cache into the
archive folder (archives are often read-only, e.g. shared data), and (c) stops at the first
broken file, while one broken file among thousands should be skipped and counted. We walk the
archive ourselves instead (folders, zips, zips inside folders, extra top folders).

Two fixes on top of `DataFile`: the network is taken from the file's header line (ISMN's
interface takes it from the top folder of the path, which is wrong for archives with an extra
top folder such as `Data_seperate_files_.../FR_Aqui/...`), and any parse failure becomes an
`InputDataError` that names the file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
import pandas as pd
import xarray as xr

from somojax.errors import InputDataError

DATA_SUFFIX = ".stm"
SM_VARIABLE = "soil_moisture"
_TEMP_ROOT = Path(tempfile.gettempdir()) / "somojax-ismn"


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
    _handle: Any = field(default=None, repr=False, compare=False)

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


def _roots(path: Path) -> list[tuple[Any, list[str]]]:
    """(IsmnRoot, data-file paths inside it) for a folder, a zip, a single file, or zips in a folder."""
    from ismn.base import IsmnRoot

    if not path.exists():
        raise InputDataError(f"ISMN archive {path} does not exist (data.ismn)")
    if path.is_file() and path.suffix.lower() == ".zip":
        try:
            root = IsmnRoot(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise InputDataError(f"{path}: not a readable zip archive ({e})") from None
        names = sorted(n for n in root.zip.namelist() if n.lower().endswith(DATA_SUFFIX) and not n.endswith("/"))
        return [(root, names)]
    if path.is_file():
        return [(IsmnRoot(path.parent), [path.name])]
    out: list[tuple[Any, list[str]]] = []
    names = sorted(
        PurePosixPath(Path(dp, f).relative_to(path)).as_posix()
        for dp, _, fs in os.walk(path)
        for f in fs
        if f.lower().endswith(DATA_SUFFIX)
    )
    if names:
        out.append((IsmnRoot(path), names))
    for dp, _, fs in sorted(os.walk(path)):
        for f in sorted(fs):
            if f.lower().endswith(".zip"):
                out += _roots(Path(dp) / f)
    return out


def _variable_code(relpath: str) -> str:
    """ISMN file names are `<net>_<net>_<station>_<var>_<from>_<to>_<sensor>_<start>_<end>.stm`."""
    parts = PurePosixPath(relpath).name.split("_")
    return parts[3] if len(parts) > 3 else "?"


def _first_line_tokens(root: Any, relpath: str) -> list[str]:
    """Tokens of the first non-empty line, for any line ending (CR, LF, CRLF)."""
    if root.zip:
        with root.zip.open(relpath) as f:
            head = f.read(4096)
    else:
        with open(root.path / relpath, "rb") as f:
            head = f.read(4096)
    for line in head.replace(b"\r", b"\n").split(b"\n"):
        if line.strip():
            return line.decode("ascii", "replace").split()
    return []


def _where(root: Any, relpath: str) -> str:
    return f"{root.path}:{relpath}" if root.zip else str(root.path / relpath)


def _diagnose(root: Any, relpath: str, err: Exception) -> str:
    """A one-line reason why ISMN's reader rejected a file."""
    try:
        if root.zip:
            with root.zip.open(relpath) as f:
                raw = f.read(1 << 20)
        else:
            with open(root.path / relpath, "rb") as f:
                raw = f.read(1 << 20)
        lines = [ln for ln in raw.replace(b"\r", b"\n").split(b"\n") if ln.strip()]
        if not lines:
            return "the file is empty"
        first = lines[0].decode("ascii", "replace").strip()
        return (
            f"{len(lines)} non-empty line(s); the first line {first[:60]!r} has {len(first.split())} "
            "field(s)"
        )
    except Exception:  # pragma: no cover - diagnosing must never hide the original problem
        last = [ln for ln in str(err).splitlines() if ln.strip()]
        return last[-1].strip() if last else type(err).__name__


def read_metadata(root: Any, relpath: str) -> SensorFile:
    """Metadata of one ISMN data file; raises `InputDataError` naming the file if unreadable."""
    from ismn.filehandlers import DataFile

    where = _where(root, relpath)
    _TEMP_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        df = DataFile(root, relpath, load_metadata=True, temp_root=str(_TEMP_ROOT))
        meta = df.metadata
        depth = meta["instrument"].depth
        lat, lon = float(meta["latitude"].val), float(meta["longitude"].val)
        elevation = float(meta["elevation"].val)
        sensor, variable = str(meta["instrument"].val), str(meta["variable"].val)
        network, station = str(meta["network"].val), str(meta["station"].val)
        dfrom, dto = float(depth.start), float(depth.end)
    except Exception as e:  # the ismn package raises IOError/IndexError/ValueError on bad files
        raise InputDataError(
            f"{where}: not a readable ISMN data file ({_diagnose(root, relpath, e)}); expected the "
            "'header+values' format (a header line of 9 fields, then lines 'date time value flag "
            "provider_flag') or the 'CEOP separated' format (15 fields per line)"
        ) from None
    tokens = _first_line_tokens(root, relpath)
    # network/station from the header line (see the module docstring)
    if df.file_type == "ceop_sep" and len(tokens) >= 7:
        network, station = tokens[5], tokens[6]
    elif df.file_type == "header_values" and len(tokens) >= 3:
        network, station = tokens[1], tokens[2]
    if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 360):
        raise InputDataError(f"{where}: station coordinates ({lat}, {lon}) are not valid latitude/longitude")
    if not (np.isfinite(dfrom) and np.isfinite(dto)) or dto < dfrom or dfrom < 0:
        raise InputDataError(f"{where}: sensor depth range {dfrom}..{dto} m is not valid")
    return SensorFile(
        archive=str(root.path),
        path=relpath,
        network=network,
        station=station,
        latitude=lat,
        longitude=lon,
        elevation=elevation,
        depth_from=dfrom,
        depth_to=dto,
        sensor=sensor,
        variable=variable,
        format=df.file_type,
        _handle=df,
    )


def scan_ismn(path: str | os.PathLike, variable: str = SM_VARIABLE) -> IsmnScan:
    """Lists the data files of an ISMN archive and reads their metadata.

    Files of other variables (soil temperature `ts`, precipitation `p`, ...) are counted and not
    read; unreadable files are listed in `skipped` with the reason and the scan continues. Raises
    `InputDataError` when the archive does not exist or holds no data file at all.
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
                skipped.append({"file": _where(root, rel), "reason": str(e)})
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


def read_values(sf: SensorFile) -> pd.DataFrame:
    """The values of one data file: DataFrame indexed by UTC time with `sm`, `ismn_flag`,
    `provider_flag`. Raises `InputDataError` naming the file when the values cannot be parsed."""
    df = sf._handle
    if df is None:
        from ismn.base import IsmnRoot

        root = IsmnRoot(sf.archive)
        df = read_metadata(root, sf.path)._handle
    try:
        with warnings.catch_warnings():  # the ismn package's own pandas deprecations
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*inplace.*")
            data = df.read_data()
        var = df.metadata["variable"].val
        out = pd.DataFrame(
            {
                "sm": pd.to_numeric(data[var], errors="raise").to_numpy(np.float64),
                # whitespace-separated columns: the flags carry no surrounding blanks
                "ismn_flag": data[f"{var}_flag"].to_numpy(dtype=object),
                "provider_flag": data[f"{var}_orig_flag"].to_numpy(dtype=object),
            },
            index=pd.DatetimeIndex(data.index, name="time"),
        )
    except Exception as e:
        raise InputDataError(f"{sf.where}: cannot parse the values of this ISMN file ({type(e).__name__}: {str(e)[:200]})") from None
    return out


def to_dataset(sf: SensorFile, values: pd.DataFrame) -> xr.Dataset:
    """An xarray view of one sensor's values with CF attributes and the sensor metadata."""
    ds = xr.Dataset(
        {
            "sm": ("time", values["sm"].to_numpy(), {"units": "m3 m-3", "long_name": "volumetric soil moisture", "standard_name": "volume_fraction_of_condensed_water_in_soil"}),
            "ismn_flag": ("time", values["ismn_flag"].to_numpy().astype(str), {"long_name": "ISMN quality flag (G good, C.. D.. dubious, U unchecked)"}),
            "provider_flag": ("time", values["provider_flag"].to_numpy().astype(str), {"long_name": "data provider's quality flag"}),
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
        },
    )
    return ds


def read_ismn_file(path: str | os.PathLike, relpath: str | None = None) -> xr.Dataset:
    """Reads one ISMN data file (`path` the file, or `path` an archive and `relpath` inside it).

    Returns:
      Dataset with dim `time` (UTC) and variables `sm` [m3 m-3], `ismn_flag`, `provider_flag`;
      attributes network, station, latitude, longitude, elevation, depth_from, depth_to [m],
      sensor, ismn_format, source_file.
    """
    from ismn.base import IsmnRoot

    path = Path(path)
    if not path.exists():
        raise InputDataError(f"ISMN file {path} does not exist")
    if relpath is None:
        root, relpath = IsmnRoot(path.parent), path.name
    else:
        root = IsmnRoot(path)
    sf = read_metadata(root, relpath)
    return to_dataset(sf, read_values(sf))


def group_sensors(scan: IsmnScan) -> list[list[SensorFile]]:
    """The files of a scan grouped by sensor (same network, station, sensor type and depths),
    in a stable order."""
    groups: dict[tuple, list[SensorFile]] = {}
    for sf in scan.files:
        groups.setdefault(sf.key, []).append(sf)
    return [groups[k] for k in sorted(groups)]


def read_sensor(members: list[SensorFile]) -> tuple[pd.DataFrame | None, list[dict], int]:
    """The values of one sensor's files concatenated in time.

    Returns:
      (values or None when no file could be read, problems [{"file", "reason"}], number of
      duplicated time stamps dropped — the first value of a time is kept).
    """
    parts, problems = [], []
    for sf in members:
        try:
            parts.append(read_values(sf))
        except InputDataError as e:
            problems.append({"file": sf.where, "reason": str(e)})
    if not parts:
        return None, problems, 0
    vals = pd.concat(parts) if len(parts) > 1 else parts[0]
    if not vals.index.is_monotonic_increasing:
        vals = vals.sort_index(kind="stable")
    dup = vals.index.duplicated(keep="first")
    n_dup = int(dup.sum())
    if n_dup:
        problems.append({"file": ", ".join(sf.where for sf in members), "reason": f"{n_dup} duplicated time stamps (first kept)"})
        vals = vals[~dup]
    return vals, problems, n_dup


def iter_sensors(scan: IsmnScan) -> Iterator[tuple[list[SensorFile], pd.DataFrame | None, list[dict]]]:
    """(files, values, problems) per sensor; see `group_sensors` and `read_sensor`."""
    for members in group_sensors(scan):
        values, problems, _ = read_sensor(members)
        yield members, values, problems
