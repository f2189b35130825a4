"""A minimal OGC GeoPackage (1.3) writer for polygon layers, on the standard library's sqlite3.

    write_gpkg("changes.gpkg", [Layer("changes", "EPSG:32615", fields, rows)])
    # fields: [("id", "TEXT"), ("score", "REAL"), ...]; rows: [(ring [(x, y), ...], {"id": ..., ...}), ...]

GeoPackage is SQLite with three metadata tables (gpkg_spatial_ref_sys, gpkg_contents, gpkg_geometry_columns) and
geometries stored as a small header (magic "GP", SRS id, envelope) followed by ISO WKB. Writing it directly needs
no GDAL/OGR binding (pyogrio, fiona), so `edgecc[geo]` (rasterio, for CRS definitions and reprojection) is enough;
QGIS, GDAL/OGR, geopandas and pyogrio read the result. The file is written to a temporary name and renamed.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ._atomic import atomic_path

__all__ = ["Layer", "write_gpkg", "crs_wkt", "PIXEL_CRS"]

PIXEL_CRS = "pixel"  # a layer in pixel coordinates: GeoPackage's "undefined Cartesian SRS" (srs_id -1)
_WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
              'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",'
              '0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]]')
_SQL_TYPES = {"TEXT", "INTEGER", "REAL", "BOOLEAN", "DATE", "DATETIME"}


@dataclass(frozen=True)
class Layer:
    name: str
    crs: str  # "EPSG:n", a WKT string, or PIXEL_CRS
    fields: tuple[tuple[str, str], ...]  # (name, SQL type) in column order
    rows: list = field(default_factory=list)  # [(ring [(x, y), ...] closed, {field: value})]


def crs_wkt(crs: str) -> str:
    """WKT of a CRS by rasterio (EPSG:4326 without it)."""
    if crs.upper() == "EPSG:4326":
        return _WGS84_WKT
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def _srs_row(crs: str, custom_id: int) -> tuple:
    """-> (srs_name, srs_id, organization, organization_coordsys_id, definition, description)."""
    if crs == PIXEL_CRS:
        return ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "pixel coordinates (column, row)")
    code = crs.split(":", 1)[1] if crs.upper().startswith("EPSG:") else None
    if code is None:
        try:
            from rasterio.crs import CRS

            epsg = CRS.from_user_input(crs).to_epsg()
            code = str(epsg) if epsg else None
        except Exception:  # noqa: BLE001 - an unparseable CRS stays a custom definition
            code = None
    wkt = crs_wkt(f"EPSG:{code}" if code else crs)
    if code and code.isdigit():
        return (f"EPSG:{code}", int(code), "EPSG", int(code), wkt, None)
    return (f"custom {custom_id}", custom_id, "NONE", custom_id, wkt, None)


def _geom_blob(ring, srs_id: int) -> tuple[bytes, tuple[float, float, float, float]]:
    """A closed ring -> GeoPackage binary: header (magic, version 0, flags: little-endian + xy envelope) + WKB."""
    xs, ys = [float(p[0]) for p in ring], [float(p[1]) for p in ring]
    env = (min(xs), max(xs), min(ys), max(ys))
    header = b"GP" + bytes([0, 0b00000011]) + struct.pack("<i4d", srs_id, *env)
    wkb = struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<2d", x, y) for x, y in zip(xs, ys))
    return header + wkb, env


def write_gpkg(path: str | Path, layers: list[Layer]) -> Path:
    """Write polygon layers (each with its own CRS) into one new GeoPackage at `path` (replaced atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()  # sqlite creates it
        con = sqlite3.connect(tmp)
        try:
            _write(con, layers)
            con.commit()
        finally:
            con.close()
    return path


def _write(con: sqlite3.Connection, layers: list[Layer]) -> None:
    con.execute("PRAGMA application_id = 1196444487")  # 0x47504B47, "GPKG"
    con.execute("PRAGMA user_version = 10300")  # GeoPackage 1.3.0
    con.executescript("""
        CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
            organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
            description TEXT);
        CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
            identifier TEXT UNIQUE, description TEXT DEFAULT '',
            last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
            CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
        CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
            geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
            CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
            CONSTRAINT uk_gc_table_name UNIQUE (table_name),
            CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
            CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
    """)
    srs = {
        4326: ("WGS 84 geodetic", 4326, "EPSG", 4326, _WGS84_WKT, "longitude/latitude coordinates in decimal degrees"),
        -1: ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
        0: ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
    }
    for i, layer in enumerate(layers):
        row = _srs_row(layer.crs, 100000 + i)
        srs.setdefault(row[1], row)
        _layer(con, layer, row[1])
    con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", list(srs.values()))


def _layer(con: sqlite3.Connection, layer: Layer, srs_id: int) -> None:
    for name, typ in layer.fields:
        if not name.isidentifier() or typ not in _SQL_TYPES:
            raise ValueError(f"bad GeoPackage field {name!r} {typ!r}")
    if not layer.name.isidentifier():
        raise ValueError(f"bad GeoPackage layer name {layer.name!r}")
    cols = ", ".join(f'"{n}" {t}' for n, t in layer.fields)
    con.execute(f'CREATE TABLE "{layer.name}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom POLYGON, {cols})')
    names = [n for n, _ in layer.fields]
    env = [float("inf"), float("-inf"), float("inf"), float("-inf")]
    values = []
    for ring, props in layer.rows:
        blob, (x0, x1, y0, y1) = _geom_blob(ring, srs_id)
        env = [min(env[0], x0), max(env[1], x1), min(env[2], y0), max(env[3], y1)]
        values.append((blob, *(props.get(n) for n in names)))
    marks = ", ".join("?" * (len(names) + 1))
    con.executemany(f'INSERT INTO "{layer.name}" (geom, {", ".join(names)}) VALUES ({marks})', values)
    bbox = (env[0], env[2], env[1], env[3]) if values else (None, None, None, None)
    con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, max_x, "
                "max_y, srs_id) VALUES (?, 'features', ?, ?, ?, ?, ?, ?, ?)",
                (layer.name, layer.name, "edgecc changed tiles", *bbox, srs_id))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POLYGON', ?, 0, 0)", (layer.name, srs_id))
