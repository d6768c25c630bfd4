"""ISMN readers on the real samples (both formats, zips, CR-only files, broken files)."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somojax.errors import InputDataError
from somojax.prepare.ismn import iter_sensors, read_ismn_file, scan_ismn

ARM1 = "COSMOS/ARM-1/COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_Cosmic-ray-Probe_20170810_20180809.stm"
NARBONNE = "SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"


def _raw_lines(path):
    """The file's value lines parsed with plain Python (independent of pandas/ismn)."""
    text = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode()
    return [ln.split() for ln in text.split("\n") if ln.strip()]


# archives in ISMN's own layout (network folders at the top; the format_* samples have no
# station level), and the re-packed zip with an extra top folder
AGAINST_ISMN = [
    "Data_seperate_files_header_20170810_20180809",
    "Data_seperate_files_20170810_20180809",
    "format_ceop_sep",
    "format_header_values",
    "zip_archives/multinetwork/header_values/Data_header_values.zip",
    "Data_seperate_files_20170810_20180809.zip",
]
EXTRA_TOP_FOLDER = {"Data_seperate_files_20170810_20180809.zip"}
# station names that differ: we keep the file header's name, the ismn package the file name's,
# in which ISMN replaces or drops the `_` that separates the name's fields (docs/real-data.md)
RENAMED_BY_ISMN = {
    "zip_archives/multinetwork/header_values/Data_header_values.zip": {
        ("CST_01", "CST-01"),
        ("CST_02", "CST-02"),
        ("Adams_Ranch_#1", "AdamsRanch#1"),
    },
}


def _theirs_provider_flag(col) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in col]


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside the ismn package
@pytest.mark.parametrize("archive", AGAINST_ISMN)
def test_agrees_with_the_ismn_package_reader(shared_data, tmp_path, archive):
    """Same timestamps, values, flags, depths and station metadata as `ismn.filehandlers.DataFile`."""
    pytest.importorskip("ismn")
    from ismn.base import IsmnRoot
    from ismn.filehandlers import DataFile

    from somojax.prepare.ismn import read_values

    path = shared_data / "ismn" / archive
    scan = scan_ismn(path)
    assert scan.files and scan.skipped == []
    root, renamed, n_values = IsmnRoot(path), set(), 0
    for sf in scan.files:
        f = DataFile(root, sf.path, temp_root=tmp_path)
        m, theirs = f.metadata, f.read_data()
        var = m["variable"].val
        assert (sf.variable, sf.format, sf.sensor) == (var, f.file_type, m["instrument"].val)
        assert (sf.latitude, sf.longitude, sf.elevation) == (m["latitude"].val, m["longitude"].val, m["elevation"].val)
        assert (sf.depth_from, sf.depth_to) == (m["instrument"].depth.start, m["instrument"].depth.end)
        # ismn names the network after the archive's top folder, we after the header: the same
        # in ISMN's layout, not with an extra top folder (test_zip_with_extra_top_folder_matches_unpacked)
        assert m["network"].val == sf.path.split("/")[0]
        assert sf.network == m["network"].val or archive in EXTRA_TOP_FOLDER
        if sf.station != m["station"].val:
            renamed.add((sf.station, m["station"].val))
        ours = read_values(sf).values
        np.testing.assert_array_equal(ours.index.to_numpy(), theirs.index.to_numpy())
        np.testing.assert_array_equal(ours["sm"].to_numpy(), theirs[var].to_numpy(np.float64))
        assert ours["ismn_flag"].tolist() == theirs[var + "_flag"].astype(str).tolist()
        assert ours["provider_flag"].tolist() == _theirs_provider_flag(theirs[var + "_orig_flag"])
        n_values += len(ours)
    assert renamed == RENAMED_BY_ISMN.get(archive, set())
    assert n_values > 700


@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_agrees_with_the_ismn_interface(shared_data, tmp_path):
    """The stations, sensors and series that `ismn.interface.ISMN_Interface` lists (its metadata
    cache in tmp_path: the archive may be read-only)."""
    pytest.importorskip("ismn")
    from ismn.interface import ISMN_Interface

    path = shared_data / "ismn" / "zip_archives" / "multinetwork" / "header_values" / "Data_header_values.zip"
    renamed = dict(RENAMED_BY_ISMN[str(path.relative_to(shared_data / "ismn"))])
    ours = {(s.network, renamed.get(s.station, s.station)): s for s in scan_ismn(path).files}
    series = {files[0].key: values for files, values, _ in iter_sensors(scan_ismn(path))}
    theirs = ISMN_Interface(path, meta_path=tmp_path)
    seen = set()
    for net in theirs.collection.networks.values():
        for st_ in net.stations.values():
            (sensor,) = st_.sensors.values()
            sf = ours[(net.name, st_.name)]
            assert (sf.latitude, sf.longitude, sf.elevation) == (st_.lat, st_.lon, st_.elev)
            assert (sf.depth_from, sf.depth_to, sf.sensor) == (sensor.depth.start, sensor.depth.end, sensor.instrument)
            values, data = series[sf.key], sensor.read_data()
            np.testing.assert_array_equal(values.index.to_numpy(), data.index.to_numpy())
            np.testing.assert_array_equal(values["sm"].to_numpy(), data["soil_moisture"].to_numpy(np.float64))
            assert values["ismn_flag"].tolist() == data["soil_moisture_flag"].astype(str).tolist()
            seen.add((net.name, st_.name))
    assert seen == set(ours) and len(seen) == 8


def test_header_values_and_ceop_give_identical_series(shared_data):
    ismn = shared_data / "ismn"
    for station in ("ARM-1", "Barrow-ARM"):
        a = scan_ismn(ismn / "Data_seperate_files_header_20170810_20180809")
        b = scan_ismn(ismn / "Data_seperate_files_20170810_20180809")
        fa = next(f for f in a.files if f.station == station)
        fb = next(f for f in b.files if f.station == station)
        assert (fa.format, fb.format) == ("header_values", "ceop_sep")
        assert fa.key == fb.key
        assert (fa.latitude, fa.longitude, fa.depth_from, fa.depth_to) == (
            fb.latitude,
            fb.longitude,
            fb.depth_from,
            fb.depth_to,
        )
        da = read_ismn_file(fa.archive, fa.path)
        db = read_ismn_file(fb.archive, fb.path)
        assert da.sizes["time"] == db.sizes["time"] > 6000
        np.testing.assert_array_equal(da["time"].values, db["time"].values)
        np.testing.assert_array_equal(da["sm"].values, db["sm"].values)
        np.testing.assert_array_equal(da["ismn_flag"].values, db["ismn_flag"].values)
        np.testing.assert_array_equal(da["provider_flag"].values, db["provider_flag"].values)


def test_header_values_matches_plain_parse(shared_data):
    p = shared_data / "ismn" / "Data_seperate_files_header_20170810_20180809" / ARM1
    ds = read_ismn_file(p)
    lines = _raw_lines(p)
    head, rows = lines[0], lines[1:]
    assert ds.attrs["network"] == head[1] == "COSMOS" and ds.attrs["station"] == "ARM-1"
    assert ds.attrs["latitude"] == pytest.approx(float(head[3])) and ds.attrs["longitude"] == pytest.approx(
        float(head[4])
    )
    assert (ds.attrs["depth_from"], ds.attrs["depth_to"]) == (0.0, 0.19)
    assert ds.attrs["sensor"] == "Cosmic-ray-Probe"
    assert ds.sizes["time"] == len(rows)
    np.testing.assert_array_equal(ds["sm"].values, [float(r[2]) for r in rows])
    assert ds["ismn_flag"].values.tolist() == [r[3] for r in rows]
    assert ds["provider_flag"].values.tolist() == [r[4] for r in rows]
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp(f"{rows[0][0]} {rows[0][1]}".replace("/", "-"))
    assert ds["sm"].attrs["units"] == "m3 m-3"


@pytest.mark.parametrize("folder", ["format_ceop_sep", "format_header_values"])
def test_cr_only_files_without_station_folder(shared_data, folder):
    p = shared_data / "ismn" / folder / NARBONNE
    raw = p.read_bytes()
    assert b"\r" in raw and b"\n" not in raw.rstrip(b"\r\n")[:2000]  # CR-only line endings
    ds = read_ismn_file(p)
    rows = _raw_lines(p)[0 if folder == "format_ceop_sep" else 1 :]
    value_col = 12 if folder == "format_ceop_sep" else 2
    np.testing.assert_array_equal(ds["sm"].values, [float(r[value_col]) for r in rows])
    assert (ds.attrs["network"], ds.attrs["station"]) == ("SMOSMANIA", "Narbonne")
    assert set(ds["ismn_flag"].values) <= {"G", "U", "D02", "D03", "D04", "D05", "M"}
    scan = scan_ismn(shared_data / "ismn" / folder)
    assert len(scan.files) == 1 and scan.skipped == []


def test_cr_only_formats_agree(shared_data):
    a = read_ismn_file(shared_data / "ismn" / "format_ceop_sep" / NARBONNE)
    b = read_ismn_file(shared_data / "ismn" / "format_header_values" / NARBONNE)
    np.testing.assert_array_equal(a["sm"].values, b["sm"].values)
    np.testing.assert_array_equal(a["time"].values, b["time"].values)


def test_zip_with_extra_top_folder_matches_unpacked(shared_data):
    z = scan_ismn(shared_data / "ismn" / "Data_seperate_files_20170810_20180809.zip")
    d = scan_ismn(shared_data / "ismn" / "Data_seperate_files_20170810_20180809")
    assert sorted(f.key for f in z.files) == sorted(f.key for f in d.files)
    # the network comes from the file header, not from the extra top folder of the zip
    assert {f.network for f in z.files} == {"COSMOS", "FR_Aqui"}
    fz = next(f for f in z.files if f.station == "fraye")
    fd = next(f for f in d.files if f.station == "fraye")
    vz = read_ismn_file(fz.archive, fz.path)
    vd = read_ismn_file(fd.archive, fd.path)
    assert vz.sizes["time"] == 52045
    np.testing.assert_array_equal(vz["sm"].values, vd["sm"].values)


def test_multinetwork_zip(shared_data):
    scan = scan_ismn(
        shared_data / "ismn" / "zip_archives" / "multinetwork" / "header_values" / "Data_header_values.zip"
    )
    nets = sorted((f.network, f.station) for f in scan.files)
    assert [n for n, _ in nets].count("MAQU") == 2
    assert [n for n, _ in nets].count("SCAN") == 3
    assert [n for n, _ in nets].count("SOILSCAPE") == 3
    assert all(abs(f.depth_from - 0.05) < 0.002 for f in scan.files)
    total = 0
    for files, values, problems in iter_sensors(scan):
        assert values is not None and problems == [] and values["sm"].notna().all()
        assert values.index.is_monotonic_increasing
        total += len(values)
    assert total > 100_000


def test_every_sample_archive_is_readable(shared_data):
    ismn = shared_data / "ismn"
    scan = scan_ismn(ismn / "zip_archives")
    assert len(scan.files) == 13 and scan.skipped == []
    for p in ["Data_seperate_files_header_20170810_20180809", "format_ceop_sep", "format_header_values"]:
        assert scan_ismn(ismn / p).skipped == []


def test_malformed_file_clear_error(shared_data):
    p = shared_data / "ismn" / "malformed" / "mal_formed_file.txt"
    with pytest.raises(
        InputDataError, match=r"mal_formed_file\.txt: not a readable ISMN data file .*'no good data here' has 4 field"
    ):
        read_ismn_file(p)


def test_bad_file_in_archive_is_skipped_and_counted(shared_data, tmp_path):
    src = shared_data / "ismn" / "Data_seperate_files_header_20170810_20180809"
    arc = tmp_path / "archive"
    shutil.copytree(src, arc)
    bad = arc / "COSMOS" / "Broken" / "COSMOS_COSMOS_Broken_sm_0.050000_0.050000_X_20170810_20180809.stm"
    bad.parent.mkdir()
    shutil.copy(shared_data / "ismn" / "malformed" / "mal_formed_file.txt", bad)
    other = arc / "COSMOS" / "ARM-1" / "COSMOS_COSMOS_ARM-1_ts_0.050000_0.050000_X_20170810_20180809.stm"
    other.write_text("x\n")
    scan = scan_ismn(arc)
    assert len(scan.files) == 2
    assert (
        len(scan.skipped) == 1
        and "Broken" in scan.skipped[0]["file"]
        and "not a readable ISMN data file" in scan.skipped[0]["reason"]
    )
    assert scan.other_variables == {"ts": 1}
    # the same inside a zip
    zp = tmp_path / "a.zip"
    with zipfile.ZipFile(zp, "w") as z:
        for f in arc.rglob("*"):
            z.write(f, f.relative_to(arc))
    scan = scan_ismn(zp)
    assert len(scan.files) == 2 and len(scan.skipped) == 1


def test_missing_archive_and_empty_folder(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        scan_ismn(tmp_path / "nope")
    with pytest.raises(InputDataError, match=r"no ISMN data files \(\*\.stm\)"):
        scan_ismn(tmp_path)


# ------------------------------------------------------------------ damaged files and archives
HEADER_ARM1 = "Data_seperate_files_header_20170810_20180809"


def _copy_arm1(shared_data, tmp_path):
    dst = tmp_path / "arc" / ARM1
    dst.parent.mkdir(parents=True)
    shutil.copy(shared_data / "ismn" / HEADER_ARM1 / ARM1, dst)
    return dst


GARBAGE = [
    b"this line is text",
    b"2017/08/1",  # a line cut off inside the date
    b"2017/08/10 05:00   0.1470 G M 2017/08/10 06:00   0.1710 G M",  # two lines run together
    b"2017/08/10 07:00   abc G M",  # not a number
    b"2017-08-10 08:00   0.1990 G M",  # a date in another format
    b"2017/08/10 09:00   nan G M",  # not a finite value
]


def test_garbage_lines_cost_only_those_lines(shared_data, tmp_path):
    p = _copy_arm1(shared_data, tmp_path)
    lines = p.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
    head, rows = lines[0], [ln for ln in lines[1:] if ln.strip()]
    at = [3, 100, 2000, 4000, 6000]  # garbage goes before these rows; the last line is cut mid-way
    out = [head]
    for i, row in enumerate(rows[:-1]):
        if i in at:
            out.append(GARBAGE[at.index(i)])
        out.append(row)
    out += [GARBAGE[5], rows[-1][:14]]  # a download cut off: '2018/08/09 23:' is no value line
    p.write_bytes(b"\r\n".join(out) + b"\r\n")
    ds = read_ismn_file(p)
    good = [r.decode().split() for r in rows[:-1]]
    assert ds.attrs["unparseable_lines"] == len(GARBAGE) + 1 and ds.attrs["value_lines"] == len(rows) + len(GARBAGE)
    np.testing.assert_array_equal(ds["sm"].values, [float(r[2]) for r in good])
    assert ds["ismn_flag"].values.tolist() == [r[3] for r in good]
    # in an archive: the file is read, its garbage counted per file, nothing skipped
    scan = scan_ismn(tmp_path / "arc")
    assert len(scan.files) == 1 and scan.skipped == []
    ((_, values, problems),) = list(iter_sensors(scan))
    assert len(values) == len(good)
    assert problems == [
        {
            "file": str(p),
            "reason": f"7 of {len(rows) + 6:,} value line(s) do not parse and were skipped (the first: 'this line is text')",
        }
    ]


def test_truncated_zip_is_an_error_naming_it(shared_data, tmp_path):
    src = (shared_data / "ismn" / "Data_seperate_files_20170810_20180809.zip").read_bytes()
    bad = tmp_path / "ismn_download.zip"
    bad.write_bytes(src[: len(src) // 2])  # a download cut off half-way: no central directory
    with pytest.raises(
        InputDataError,
        match=r"ismn_download\.zip: not a readable zip archive \(File is not a zip file\); the download may be incomplete or damaged: download it again",
    ):
        scan_ismn(bad)
    with pytest.raises(InputDataError, match="not a readable zip archive"):
        read_ismn_file(bad, "x.stm")


def test_damaged_zip_member_is_skipped_with_the_reason(shared_data, tmp_path):
    src = shared_data / "ismn" / "Data_seperate_files_20170810_20180809.zip"
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if "ARM-1" in i.filename and i.filename.endswith(".stm"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    mid = start + info.compress_size // 2
    raw[mid : mid + 64] = bytes(64)  # damage the middle of the compressed data
    bad = tmp_path / "damaged.zip"
    bad.write_bytes(bytes(raw))
    scan = scan_ismn(bad)  # the metadata (first line) still reads
    assert sorted(f.station for f in scan.files) == ["ARM-1", "Barrow-ARM", "fraye"]
    got = {files[0].station: (values, problems) for files, values, problems in iter_sensors(scan)}
    values, problems = got["ARM-1"]
    assert values is None and len(problems) == 1
    assert (
        problems[0]["file"].endswith(info.filename)
        and "cannot read this file" in problems[0]["reason"]
        and "archive may be damaged" in problems[0]["reason"]
    )
    assert got["fraye"][0] is not None and len(got["fraye"][0]) == 52045


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("ok"),
                st.integers(0, 10**5),
                st.integers(0, 9999),
                st.sampled_from(["G", "D03", "D03,D05", "U", "C01"]),
                st.sampled_from(["M", "OK", ""]),
            ),
            st.tuples(
                st.just("bad"),
                st.sampled_from(GARBAGE + [b"x", b"2017/08/10", b"2017/08/10 01:00", b"1 2 3 4 5 6 7"]),
                st.none(),
                st.none(),
                st.none(),
            ),
        ),
        max_size=40,
    ),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_any_mix_of_value_lines_and_garbage(rows, newline):
    """Property: every valid line is read exactly, every garbage line is counted."""
    from somojax.prepare.ismn import parse_values

    t0 = np.datetime64("2001-01-01T00:00")
    lines, expect = ["NET NET ST 40.0 -97.0 100.0 0.05 0.05 Probe"], []
    for kind, a, b, flag, pflag in rows:
        if kind == "bad":
            lines.append(a.decode())
            continue
        t = t0 + np.timedelta64(a, "h")
        lines.append(f"{pd.Timestamp(t):%Y/%m/%d %H:%M} {b / 10000:.4f} {flag} {pflag}".rstrip())
        expect.append((t, b / 10000, flag, pflag))
    fv = parse_values(newline.join(lines).encode(), "header_values")
    assert fv.unparseable == len(rows) - len(expect) and fv.lines == len(rows)
    np.testing.assert_array_equal(fv.values.index.to_numpy(), np.array([t for t, *_ in expect], "datetime64[ns]"))
    np.testing.assert_array_equal(fv.values["sm"].to_numpy(), [v for _, v, *_ in expect])
    assert fv.values["ismn_flag"].tolist() == [f for *_, f, _ in expect]
    assert fv.values["provider_flag"].tolist() == [p for *_, p in expect]
