"""The JVM jars (Sedona, GeoTools wrapper, Delta) for the installed Spark version.

``conf/jars.yaml`` maps a Spark minor version to Maven coordinates (and optional groups, such as
s3a, to more). ``fetch`` downloads them from Maven Central into ``<jars_dir>/spark-<x.y>/`` and
checks each jar's SHA-1; ``session_jars`` lists those a config's session needs, for the session or
for ``spark-submit --jars``.

    python -m insarlake.jars fetch [--jars-dir DIR] [--with s3a]   # idempotent: verified jars are kept
    python -m insarlake.jars list  [--jars-dir DIR] [--with s3a]   # comma-separated paths, for --jars
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

from insarlake.errors import ConfigError

log = logging.getLogger(__name__)


def project_root() -> Path:
    """The checkout holding conf/ and jobs/: $INSARLAKE_HOME (set by spark-submit.sh), else
    the folder above libs/ when the package is installed from a checkout, else the cwd."""
    env = os.environ.get("INSARLAKE_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent.parent
    return here if (here / "conf" / "jars.yaml").is_file() else Path.cwd()


def spark_minor_version() -> str:
    """'4.0' for pyspark 4.0.1."""
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def load_manifest(path: Path | None = None) -> dict:
    path = path or project_root() / "conf" / "jars.yaml"
    if not path.is_file():
        raise ConfigError(f"jar manifest {path}: not found")
    manifest = yaml.safe_load(path.read_text())
    if not isinstance(manifest, dict) or "repository" not in manifest or "spark" not in manifest:
        raise ConfigError(f"jar manifest {path}: needs keys 'repository' and 'spark'")
    return manifest


def coordinates(spark_version: str, manifest: dict | None = None, groups: tuple[str, ...] = ()) -> list[str]:
    """The Maven coordinates for ``spark_version``: the jars every session needs, then those of
    each optional group named (``groups`` in conf/jars.yaml, e.g. s3a)."""
    manifest = manifest or load_manifest()
    versions = manifest["spark"]
    if spark_version not in versions:
        raise ConfigError(
            f"conf/jars.yaml: no jars listed for Spark {spark_version} (listed: {', '.join(versions)})")
    out = list(versions[spark_version])
    for group in groups:
        listed = (manifest.get("groups") or {}).get(group) or {}
        if spark_version not in listed:
            raise ConfigError(f"conf/jars.yaml: no {group} jars listed for Spark {spark_version}")
        out.extend(listed[spark_version])
    return out


def all_groups(manifest: dict | None = None) -> tuple[str, ...]:
    """The optional groups of conf/jars.yaml."""
    return tuple((manifest or load_manifest()).get("groups") or {})


def needs_s3a(config) -> bool:
    """Whether a session for ``config`` needs Hadoop's S3A connector: its lake is s3:// or s3a://,
    or its spark.conf sets spark.hadoop.fs.s3a.* (an s3a:// input with a local lake)."""
    scheme = config.lake.path.split("://", 1)[0].lower() if "://" in config.lake.path else ""
    return scheme in ("s3", "s3a") or any(k.startswith("spark.hadoop.fs.s3a.") for k in config.spark.conf or {})


def session_jars(config) -> str:
    """The jars a session for ``config`` loads, comma-separated (for spark.jars or spark-submit
    --jars), or "provided": spark.jars auto gives the fetched jars (with the s3a group when
    needs_s3a, the derby-server group for catalog.kind=server), provided gives "provided",
    anything else is taken as the list."""
    jars = config.spark.jars
    if jars == "auto":
        groups = ("s3a",) * needs_s3a(config) + ("derby-server",) * (config.catalog.kind == "server")
        return ",".join(local_jars(config.spark.jars_dir, groups=groups))
    return jars


def jar_dir(jars_dir: str | Path, spark_version: str) -> Path:
    base = Path(jars_dir)
    if not base.is_absolute():
        base = project_root() / base
    return base / f"spark-{spark_version}"


def _jar_name(coordinate: str) -> tuple[str, str]:
    group, artifact, version = coordinate.split(":")
    name = f"{artifact}-{version}.jar"
    return name, f"{group.replace('.', '/')}/{artifact}/{version}/{name}"


def local_jars(jars_dir: str | Path, spark_version: str | None = None, groups: tuple[str, ...] = ()) -> list[str]:
    """Paths of the fetched jars (and of the optional ``groups``); raises ConfigError naming the
    missing jar and the fix."""
    spark_version = spark_version or spark_minor_version()
    folder = jar_dir(jars_dir, spark_version)
    paths = []
    for coordinate in coordinates(spark_version, groups=groups):
        path = folder / _jar_name(coordinate)[0]
        if not path.is_file():
            raise ConfigError(f"jar {path} is missing: run `make setup` (or set spark.jars=provided on a cluster)")
        paths.append(str(path))
    return paths


def _sha1(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


def fetch(jars_dir: str | Path, spark_version: str | None = None,
          groups: tuple[str, ...] | None = None) -> list[Path]:
    """Download missing or corrupt jars (and those of the optional ``groups``; None: every group);
    returns their paths."""
    spark_version = spark_version or spark_minor_version()
    manifest = load_manifest()
    groups = all_groups(manifest) if groups is None else groups
    repo = manifest["repository"].rstrip("/")
    folder = jar_dir(jars_dir, spark_version)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for coordinate in coordinates(spark_version, manifest, groups):
        name, rel = _jar_name(coordinate)
        path = folder / name
        sha_path = folder / (name + ".sha1")
        if path.is_file() and sha_path.is_file() and _sha1(path) == sha_path.read_text().split()[0]:
            paths.append(path)
            continue
        url = f"{repo}/{rel}"
        log.info("fetching %s", url)
        try:
            with urllib.request.urlopen(url + ".sha1", timeout=120) as resp:
                expected = resp.read().decode().split()[0]
            with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp, \
                    urllib.request.urlopen(url, timeout=300) as resp:
                while block := resp.read(1 << 20):
                    tmp.write(block)
        except OSError as exc:
            raise ConfigError(f"jar {coordinate}: download from {url} failed ({exc})") from None
        got = _sha1(Path(tmp.name))
        if got != expected:
            os.unlink(tmp.name)
            raise ConfigError(f"jar {coordinate}: SHA-1 mismatch (expected {expected}, got {got})")
        os.replace(tmp.name, path)
        sha_path.write_text(expected + "\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insarlake.jars", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch", "list"])
    parser.add_argument("--jars-dir", default=".jars")
    parser.add_argument("--spark-version", default=None, help="e.g. 4.0 (default: installed pyspark)")
    parser.add_argument("--with", dest="groups", action="append", default=None, metavar="GROUP",
                        help="optional jar group (conf/jars.yaml groups, e.g. s3a); fetch: default every group, "
                             "list: default none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "fetch":
            for path in fetch(args.jars_dir, args.spark_version, None if args.groups is None else tuple(args.groups)):
                log.info("jar ok: %s", path)
        else:
            sys.stdout.write(",".join(local_jars(args.jars_dir, args.spark_version, tuple(args.groups or ()))) + "\n")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
