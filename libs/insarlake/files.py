"""The lake's plain files (models, model JSON, pictures, GeoJSON, reports, training shards) on any
file system the lake lives on, through ``pyarrow.fs``:

* a local folder or ``file://`` URI;
* ``dbfs:/x``: Databricks' file system through its ``/dbfs/x`` mount on the driver and executors;
* ``s3://``, ``s3a://``: S3 or an S3-compatible server;
* ``abfss://container@account.dfs.core.windows.net/x``: Azure Data Lake Storage Gen2;
* ``gs://``: Google Cloud Storage;
* ``hdfs://``: HDFS, where libhdfs is installed (input files on EMR).

Credentials and endpoints come from the settings Spark's own connectors read, never from code:
the ``spark.hadoop.fs.s3a.*`` keys (``access.key``, ``secret.key``, ``session.token``,
``endpoint``, ``endpoint.region``, ``path.style.access``, ``connection.ssl.enabled``,
``attempts.maximum``, ``connection.establish.timeout``, ``connection.timeout``, and their
``fs.s3a.bucket.<bucket>.*`` forms) of the config's ``spark.conf`` and the Spark session, then the
standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, instance profiles), which pyarrow reads itself; for Azure
``spark.hadoop.fs.azure.account.key.<account>.dfs.core.windows.net`` or the ``AZURE_*``
environment; for Google the application default credentials.

Paths inside the lake are relative, '/'-separated (``models/tskm/demo/latest.json``). Every failure
is an ``InputError`` (or ``ConfigError`` for a URI no file system serves) whose one line names the
URI and the problem. A ``LakeFiles`` is picklable (it keeps the URI and the options, and builds its
file system where it is used), so training processes and Spark tasks get it as an argument.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping
from urllib.parse import unquote, urlparse

from insarlake.errors import ConfigError, InputError, first_line

log = logging.getLogger(__name__)

SCHEMES = ("", "file", "dbfs", "s3", "s3a", "s3n", "abfss", "gs", "hdfs")
_S3A_KEYS = {"access.key": "access_key", "secret.key": "secret_key", "session.token": "session_token",
             "endpoint": "endpoint_override", "endpoint.region": "region"}


# A file at the lake root that marks the folder as a lake (written on first use).
LAKE_MARKER = "_insarlake_lake.json"
LAKE_FORMAT = "insarlake.lake/1"


def is_local_path(uri: str) -> bool:
    """A plain path or file: URI (not dbfs:/, s3://, ...)."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1      # a Windows drive letter counts as local


def _truthy(value: str) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def s3_options(bucket: str, settings: Mapping[str, str]) -> dict:
    """``pyarrow.fs.S3FileSystem`` arguments for ``bucket`` from Spark's S3A settings (keys with or
    without the ``spark.hadoop.`` prefix; a ``fs.s3a.bucket.<bucket>.<key>`` setting overrides
    ``fs.s3a.<key>``). What is not set is left to pyarrow's own lookup (AWS_* environment,
    profiles, instance metadata)."""
    plain = {k.removeprefix("spark.hadoop."): str(v) for k, v in settings.items()}

    def get(key: str) -> str | None:
        return plain.get(f"fs.s3a.bucket.{bucket}.{key}", plain.get(f"fs.s3a.{key}"))

    out = {arg: get(key) for key, arg in _S3A_KEYS.items() if get(key)}
    endpoint = out.get("endpoint_override")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
        out["endpoint_override"] = parsed.netloc or parsed.path
        if parsed.scheme:
            out["scheme"] = parsed.scheme
    ssl = get("connection.ssl.enabled")
    if ssl is not None and not _truthy(ssl):
        out["scheme"] = "http"
    attempts = get("attempts.maximum")
    if attempts:
        from pyarrow import fs

        out["retry_strategy"] = fs.AwsStandardS3RetryStrategy(max_attempts=int(attempts))
    for key, arg in (("connection.establish.timeout", "connect_timeout"), ("connection.timeout", "request_timeout")):
        value = get(key)
        if value:
            out[arg] = hadoop_seconds(value, f"fs.s3a.{key}")
    path_style = get("path.style.access")
    if path_style is not None:
        out["force_virtual_addressing"] = not _truthy(path_style)
    return out


_UNITS_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def hadoop_seconds(value: str, key: str) -> float:
    """A Hadoop duration setting in seconds: a plain number is milliseconds; else a number and a
    unit (ms, s, m or min, h, d), as Hadoop's Configuration.getTimeDuration reads it."""
    text = str(value).strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):] or "ms"
    try:
        return float(number) * _UNITS_S[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"setting {key!r}: {value!r} is not a duration (a number of ms, or 30s, 5m, 1h)") from None


def spark_settings(config, spark=None) -> dict:
    """The file-system settings (``spark.hadoop.fs.*``) of the config's ``spark.conf``, overridden
    by those of the running Spark ``session`` when one is given (the cluster's own settings)."""
    out = {k: str(v) for k, v in (config.spark.conf or {}).items() if k.startswith(("spark.hadoop.fs.", "fs."))}
    if spark is not None:
        try:
            everything = spark.conf.getAll
            session = everything() if callable(everything) else everything
        except Exception:                       # older or restricted sessions: the config's settings only
            session = {}
        out.update({k: str(v) for k, v in dict(session).items() if k.startswith("spark.hadoop.fs.")})
    return out


@dataclass(frozen=True)
class LakeFiles:
    """The plain files under a lake ``root`` URI (see the module docstring for the schemes)."""
    root: str
    settings: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        scheme = urlparse(self.root).scheme
        if not is_local_path(self.root) and scheme not in SCHEMES:
            raise ConfigError(f"config key 'lake.path' {self.root!r}: unknown scheme {scheme + '://'!r} "
                              f"(local folders, file://, dbfs:/, s3://, s3a://, abfss://, gs://, hdfs://)")
        if not is_local_path(self.root) and scheme != "dbfs" and not urlparse(self.root).netloc:
            raise ConfigError(f"config key 'lake.path' {self.root!r}: no bucket or container in the URI")

    # -- naming ---------------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """The URI Spark reads and writes for ``parts`` under the root (a local path for a local lake)."""
        base = self.root.rstrip("/")
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{base}/{rel}" if rel else base

    @property
    def is_local(self) -> bool:
        """True when Python sees the files as local paths (a local folder, file://, dbfs:/ mount)."""
        return is_local_path(self.root) or urlparse(self.root).scheme == "dbfs"

    def local_path(self, *parts: str) -> Path:
        """The local path of ``parts`` (is_local lakes only)."""
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local lake")
        return Path(self._fs_path(*parts))

    def _fs_path(self, *parts: str) -> str:
        """The path of ``parts`` in the pyarrow file system's own terms."""
        parsed = urlparse(self.uri(*parts))
        if is_local_path(self.root):
            return unquote(parsed.path) if parsed.scheme == "file" else self.uri(*parts)
        if parsed.scheme == "dbfs":
            return "/dbfs" + unquote(parsed.path)
        if parsed.scheme == "abfss":                # container@account.dfs.core.windows.net
            return parsed.netloc.split("@", 1)[0] + unquote(parsed.path)
        if parsed.scheme == "hdfs":
            return unquote(parsed.path)
        return parsed.netloc + unquote(parsed.path)  # bucket/key

    @property
    def filesystem(self):
        """The ``pyarrow.fs.FileSystem`` of the root (built on first use, per process)."""
        fs = self.__dict__.get("_fs")
        if fs is None:
            fs = self._build_filesystem()
            object.__setattr__(self, "_fs", fs)
        return fs

    def __getstate__(self):
        return {"root": self.root, "settings": dict(self.settings)}

    def __setstate__(self, state):
        object.__setattr__(self, "root", state["root"])
        object.__setattr__(self, "settings", state["settings"])

    def _build_filesystem(self):
        from pyarrow import fs

        scheme = urlparse(self.root).scheme
        if self.is_local:
            return fs.LocalFileSystem()
        netloc = urlparse(self.root).netloc
        try:
            if scheme in ("s3", "s3a", "s3n"):
                return fs.S3FileSystem(**s3_options(netloc, self.settings))
            if scheme == "abfss":
                container_account = netloc.split("@", 1)
                account = container_account[-1].split(".", 1)[0]
                key = {k.removeprefix("spark.hadoop."): v for k, v in self.settings.items()}.get(
                    f"fs.azure.account.key.{container_account[-1]}")
                return fs.AzureFileSystem(account_name=account, account_key=key) if key else \
                    fs.AzureFileSystem(account_name=account)
            if scheme == "hdfs":                    # needs libhdfs (HADOOP_HOME, CLASSPATH) on the node
                return fs.HadoopFileSystem.from_uri(f"hdfs://{netloc}")
            return fs.GcsFileSystem()
        except Exception as exc:       # pyarrow raises OSError/ValueError/ArrowException with its own text
            raise InputError(f"lake {self.root}: cannot open its file system ({first_line(exc)})") from None

    def sub(self, *parts: str) -> "LakeFiles":
        """The files under the folder ``parts``, as a store of their own (same settings)."""
        return LakeFiles(self.uri(*parts), dict(self.settings))

    def parquet_dataset(self, *parts: str):
        """The Parquet folder ``parts`` (hive-partitioned, as Spark writes it) as a ``pyarrow.dataset``."""
        import pyarrow.dataset as ds

        with self._errors("read it as Parquet", *parts):
            return ds.dataset(self._fs_path(*parts), filesystem=self.filesystem, format="parquet",
                              partitioning="hive")

    # -- reading and writing --------------------------------------------------------------------
    @contextmanager
    def _errors(self, what: str, *parts: str):
        try:
            yield
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError(f"lake file {self.uri(*parts)}: not found") from None
        except Exception as exc:
            raise InputError(f"lake file {self.uri(*parts)}: cannot {what} ({first_line(exc)})") from None

    def exists(self, *parts: str) -> bool:
        from pyarrow import fs

        with self._errors("look it up", *parts):
            return self.filesystem.get_file_info(self._fs_path(*parts)).type != fs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        from pyarrow import fs

        with self._errors("look it up", *parts):
            return self.filesystem.get_file_info(self._fs_path(*parts)).type == fs.FileType.File

    def open_input_file(self, *parts: str):
        """A seekable, buffered binary file object of ``parts`` (an OSError when it cannot be
        opened); pyarrow's remote files are wrapped in ``io.BufferedReader`` for readline and
        peek, which they lack."""
        path = self._fs_path(*parts)
        return open(path, "rb") if self.is_local else io.BufferedReader(self.filesystem.open_input_file(path))

    def read_bytes(self, *parts: str) -> bytes:
        with self._errors("read it", *parts):
            if not self.is_file(*parts):
                raise FileNotFoundError
            with self.filesystem.open_input_stream(self._fs_path(*parts)) as stream:
                return stream.read()

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write ``data`` to ``parts`` whole: an object store's put is atomic; a local file is
        written beside and renamed. Returns its URI."""
        path = self._fs_path(*parts)
        with self._errors("write it", *parts):
            if self.is_local:
                local = Path(path)
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(local)
            else:
                with self.filesystem.open_output_stream(path) as stream:
                    stream.write(data)
        return self.uri(*parts)

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def write_text(self, text: str, *parts: str) -> str:
        return self.write_bytes(text.encode("utf-8"), *parts)

    def read_json(self, *parts: str):
        text = self.read_text(*parts)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InputError(f"lake file {self.uri(*parts)}: not valid JSON ({exc})") from None

    def write_json(self, value, *parts: str) -> str:
        return self.write_text(json.dumps(value, indent=1, sort_keys=True), *parts)

    def list_files(self, *parts: str) -> list[str]:
        """The files under the folder ``parts``, recursively, as paths relative to it (sorted); []
        when it does not exist."""
        return sorted(self.file_sizes(*parts))

    def file_sizes(self, *parts: str) -> dict[str, int]:
        """{path relative to the folder ``parts``: size in bytes} of the files under it, recursively."""
        from pyarrow import fs

        base = self._fs_path(*parts).rstrip("/")
        with self._errors("list it", *parts):
            infos = self.filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1:]: i.size for i in infos if i.type == fs.FileType.File}

    def list_dirs(self, *parts: str) -> list[str]:
        """The names of the folders directly under the folder ``parts`` (sorted); [] when it does not exist."""
        from pyarrow import fs

        base = self._fs_path(*parts).rstrip("/")
        with self._errors("list it", *parts):
            infos = self.filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
        return sorted(Path(i.path).name for i in infos if i.type == fs.FileType.Directory)

    def remove_tree(self, *parts: str) -> None:
        """Remove the folder (or file) ``parts`` and everything under it; nothing when it does not exist."""
        from pyarrow import fs

        path = self._fs_path(*parts)
        with self._errors("remove it", *parts):
            kind = self.filesystem.get_file_info(path).type
            if kind == fs.FileType.NotFound:
                return
            if kind == fs.FileType.File:
                self.filesystem.delete_file(path)
            elif self.is_local:
                shutil.rmtree(path)
            else:
                self.filesystem.delete_dir(path)

    def check_writable(self) -> None:
        """Write and remove a small probe file under the root: a missing bucket, missing or wrong
        credentials, no access or an unreachable endpoint end here, in one line naming the lake."""
        probe = f"_insarlake_probe-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self.write_bytes(b"", probe)
            self.remove_tree(probe)
        except InputError as exc:
            raise InputError(f"lake {self.root}: not writable ({str(exc).split(': ', 1)[-1]})") from None

    def check_lake(self, entries: Iterable[str]) -> None:
        """Refuse a root that is a file, or a non-empty folder that is not a lake (no ``LAKE_MARKER``
        and none of the lake's own top-level ``entries``), in one line; mark a new lake."""
        from pyarrow import fs

        root = self._fs_path().rstrip("/")
        with self._errors("look it up"):
            kind = self.filesystem.get_file_info(root).type
            if kind == fs.FileType.File:
                raise InputError(f"lake {self.root}: is a file, not a folder")
            if self.exists(LAKE_MARKER):
                return
            names = [] if kind == fs.FileType.NotFound else sorted(
                Path(i.path).name for i in self.filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True)))
        if names and not set(names) & set(entries):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise InputError(f"lake {self.root}: a folder that holds other files ({shown}), not a lake; "
                             "give a new or empty folder")
        self.write_json({"format": LAKE_FORMAT}, LAKE_MARKER)

    def discard(self, *parts: str) -> None:
        """remove_tree for clean-up (a ``finally`` block): a failure is logged, not raised, so it
        never hides the error that ended the stage."""
        try:
            self.remove_tree(*parts)
        except InputError as exc:
            log.warning("%s (left behind)", exc)

    def upload(self, local: Path, *parts: str) -> list[str]:
        """Copy every file under the local folder ``local`` to the folder ``parts`` (relative paths
        kept); the relative paths, sorted."""
        files = sorted(p for p in Path(local).rglob("*") if p.is_file())
        rel = [p.relative_to(local).as_posix() for p in files]
        for path, name in zip(files, rel):
            self.write_bytes(path.read_bytes(), *parts, name)
        return rel

    def download(self, local: Path, *parts: str) -> list[str]:
        """Copy every file under the folder ``parts`` into the local folder ``local``; the relative paths."""
        rel = self.list_files(*parts)
        for name in rel:
            target = Path(local) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(*parts, name))
        return rel

    @contextmanager
    def staged(self, *parts: str) -> Iterator[Path]:
        """A local folder whose files end up in the folder ``parts`` (pictures, GeoJSON, reports):
        the folder itself for a local lake; else a temporary one uploaded when the block ends
        without error (nothing is uploaded after an error) and removed in any case."""
        if self.is_local:
            folder = self.local_path(*parts)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        folder = Path(tempfile.mkdtemp(prefix="insarlake-stage-"))
        try:
            yield folder
            self.upload(folder, *parts)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# What Spark's and Hadoop's file-system failures look like in their messages, and the one line
# that says what is wrong (storage_problem).
_STORAGE_PATTERNS = (
    (re.compile(r'No FileSystem for scheme "?(\w+)"?|UnsupportedFileSystemException.*scheme "?(\w+)"?'),
     "this Spark has no file system for {scheme}:// (for s3a:// set spark.jars: auto, which adds Hadoop's "
     "S3A connector, or install hadoop-aws on the cluster)"),
    (re.compile(r"NoSuchBucket|bucket does not exist|Bucket .* does not exist", re.I), "the bucket does not exist"),
    (re.compile(r"NoAuthWithAWS|No AWS Credentials|Unable to load (AWS )?credentials|NoCredentials|"
                r"InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken", re.I),
     "no valid credentials (fs.s3a.access.key / secret.key, AWS_* variables or an instance profile)"),
    (re.compile(r"AccessDenied|403 Forbidden|Status Code: 403|\b403\b.*Forbidden|Forbidden", re.I), "access denied"),
    (re.compile(r"UnknownHostException|Connection refused|ConnectException|Unable to execute HTTP request|"
                r"connect timed out|Could not resolve host", re.I), "the storage endpoint cannot be reached"),
)
_URI = re.compile(r"\b(?:s3a?|abfss?|gs|dbfs|wasbs?)://[^\s\"'\]\),;]+")


def storage_problem(exc: BaseException, lake: str | None = None) -> str | None:
    """One line (``lake <uri>: <problem>``) for an exception of Spark or Hadoop that is a storage
    failure (no connector for the scheme, missing bucket, no credentials, access denied, endpoint
    unreachable), naming the URI in its message or else ``lake``; None for any other exception."""
    text = f"{type(exc).__name__}: {exc}"
    for pattern, problem in _STORAGE_PATTERNS:
        match = pattern.search(text)
        if match:
            uri = _URI.search(text)
            where = uri.group(0).rstrip(":.") if uri else (lake or "the lake")
            scheme = next((g for g in match.groups() if g), None) if match.groups() else None
            scheme = scheme or (where.split("://", 1)[0] if "://" in where else "this")
            return f"lake {where}: {problem.format(scheme=scheme)}"
    return None
