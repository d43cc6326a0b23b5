"""The lake's file store and model store on a local folder and on a real S3-compatible server
(moto's server mode, started by the tests), through pyarrow's S3 client: round trips, listings, staged
uploads, atomic model versions, settings read the way Spark's S3A reads them, and one-line errors."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from conftest import free_port, new_bucket
from insarlake.errors import ConfigError, InputError
from insarlake.files import LakeFiles, hadoop_seconds, s3_options, spark_settings
from insarlake.modelstore import COMPLETE, IncompleteModel, ModelStore


@pytest.fixture(params=["local", "s3a"])
def files(request, tmp_path):
    if request.param == "local":
        return LakeFiles(str(tmp_path / "lake"))
    settings = request.getfixturevalue("s3_server")
    return LakeFiles(f"s3a://{new_bucket(settings)}/lake", settings)


def test_files_round_trip_list_and_remove(files, tmp_path):
    assert not files.exists("models", "a.json")
    uri = files.write_json({"k": [1, 2]}, "models", "a.json")
    assert uri == files.uri("models", "a.json") and uri.startswith(files.root)
    assert files.read_json("models", "a.json") == {"k": [1, 2]}
    files.write_bytes(b"\x00\x01", "models", "sub", "w.pt")
    files.write_text("x", "outputs", "r.txt")
    assert files.list_files("models") == ["a.json", "sub/w.pt"]
    assert files.list_files("nothing", "here") == []
    files.write_bytes(b"\x02", "models", "sub", "w.pt")              # replaced whole
    assert files.read_bytes("models", "sub", "w.pt") == b"\x02"
    files.remove_tree("models")
    assert files.list_files("models") == [] and files.read_text("outputs", "r.txt") == "x"
    files.remove_tree("models")                                        # absent: nothing to do
    with pytest.raises(InputError, match=r"^lake file .*models/a\.json: not found$"):
        files.read_bytes("models", "a.json")


def test_upload_download_and_staged_folder(files, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.png").write_bytes(b"png")
    (src / "d" / "b.geojson").write_text("{}")
    assert files.upload(src, "outputs", "run1") == ["a.png", "d/b.geojson"]
    out = tmp_path / "out"
    assert files.download(out, "outputs", "run1") == ["a.png", "d/b.geojson"]
    assert (out / "d" / "b.geojson").read_text() == "{}"
    with files.staged("outputs", "run2") as folder:
        (folder / "c.png").write_bytes(b"c")
    assert files.read_bytes("outputs", "run2", "c.png") == b"c"
    with pytest.raises(RuntimeError):
        with files.staged("outputs", "run3") as folder:
            (folder / "half.png").write_bytes(b"h")
            raise RuntimeError("stage failed")
    if not files.is_local:                       # an object store receives nothing from a failed stage
        assert files.list_files("outputs", "run3") == []


def test_input_files_open_seekable_and_line_by_line(files):
    files.write_bytes(b"pid,lat\np1,44.0\n", "raw", "a.csv")
    with files.sub("raw", "a.csv").open_input_file() as fh:
        assert fh.readline() == b"pid,lat\n" and fh.seekable()
        fh.seek(4)
        assert fh.read() == b"lat\np1,44.0\n"


def test_files_survive_pickling_for_workers(files):
    files.write_text("hello", "x.txt")
    copy = pickle.loads(pickle.dumps(files))
    assert copy.read_text("x.txt") == "hello" and copy == files


def test_model_versions_appear_whole_and_latest_is_written_last(files):
    store = ModelStore(files, "classifier", "demo", "lstm")
    assert store.latest() is None and store.reusable(lambda f: None, lambda m: True) is None

    def write(payload):
        def _write(folder: Path):
            (folder / "model.json").write_text(json.dumps(payload))
            (folder / "weights.pt").write_bytes(b"w" * 10)
        return _write

    def read(folder: Path):
        return json.loads((folder / "model.json").read_text()), (folder / "weights.pt").read_bytes()

    store.save("run1", write({"v": 1}))
    assert store.latest() == "run1" and store.load("run1", read) == ({"v": 1}, b"w" * 10)
    model, version = store.reusable(read, lambda m: m[0]["v"] == 1)
    assert version == "run1" and model[0] == {"v": 1}
    assert store.reusable(read, lambda m: "other settings") is None
    assert store.reusable(read, lambda m: True, retrain=True) is None

    def broken(folder: Path):
        (folder / "model.json").write_text("{}")
        raise RuntimeError("died while writing")

    with pytest.raises(RuntimeError):
        store.save("run2", broken)
    assert store.latest() == "run1" and not files.exists(*store.parts, "run2")
    store.save("run3", write({"v": 3}), make_latest=False)        # saved, not yet the newest
    assert store.latest() == "run1" and store.load("run3", read)[0] == {"v": 3}
    store.mark_latest("run3")
    assert store.latest() == "run3"
    files.write_text("not json", *store.parts, "latest.json")
    with pytest.raises(InputError, match=r"latest\.json: not valid JSON"):
        store.latest()
    with pytest.raises(InputError, match=r"run9: not found$"):
        store.load("run9", read)


def test_s3a_settings_map_to_the_s3_client():
    settings = {"spark.hadoop.fs.s3a.endpoint": "http://minio:9000", "fs.s3a.access.key": "AK",
                "spark.hadoop.fs.s3a.secret.key": "SK", "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.bucket.special.endpoint": "s3.eu-west-1.amazonaws.com",
                "spark.hadoop.fs.s3a.bucket.special.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.connection.establish.timeout": "5s", "spark.hadoop.fs.s3a.connection.timeout": "200000"}
    common = s3_options("lake", settings)
    assert common["endpoint_override"] == "minio:9000" and common["scheme"] == "http"
    assert common["access_key"] == "AK" and common["secret_key"] == "SK"
    assert common["force_virtual_addressing"] is False
    assert common["connect_timeout"] == 5.0 and common["request_timeout"] == 200.0
    special = s3_options("special", settings)
    assert special["endpoint_override"] == "s3.eu-west-1.amazonaws.com" and special["scheme"] == "http"
    assert s3_options("lake", {}) == {}                     # left to pyarrow: AWS_* environment, profiles
    assert hadoop_seconds("1500", "k") == 1.5 and hadoop_seconds("2m", "k") == 120.0
    with pytest.raises(ConfigError, match="'k'.*not a duration"):
        hadoop_seconds("soon", "k")


def test_spark_settings_take_the_configs_file_system_keys(config):
    from insarlake.config import replace

    cfg = replace(config, spark=replace(config.spark, conf={"spark.hadoop.fs.s3a.endpoint": "http://x:1",
                                                            "spark.sql.shuffle.partitions": "4"}))
    assert spark_settings(cfg) == {"spark.hadoop.fs.s3a.endpoint": "http://x:1"}


def test_bad_lake_uris_and_buckets_fail_in_one_line(s3_server):
    with pytest.raises(ConfigError, match=r"'lake.path' 'ftp://host/lake': unknown scheme 'ftp://'"):
        LakeFiles("ftp://host/lake")
    with pytest.raises(ConfigError, match="no bucket"):
        LakeFiles("s3a:///lake")
    missing = LakeFiles("s3a://no-such-bucket-here/lake", s3_server)
    with pytest.raises(InputError, match=r"^lake file s3a://no-such-bucket-here/lake/x\.json: cannot write it \("):
        missing.write_text("x", "x.json")
    unreachable = LakeFiles("s3a://b/lake", {**s3_server, "spark.hadoop.fs.s3a.endpoint": f"http://127.0.0.1:{free_port()}",
                                              "spark.hadoop.fs.s3a.connection.establish.timeout": "2s"})
    with pytest.raises(InputError, match=r"^lake file s3a://b/lake/m\.json: cannot look it up \(") as info:
        unreachable.read_bytes("m.json")
    assert "\n" not in str(info.value)


def test_a_writable_check_names_the_lake(s3_server):
    LakeFiles(f"s3a://{new_bucket(s3_server)}/lake", s3_server).check_writable()      # passes, leaves nothing
    with pytest.raises(InputError, match=r"^lake s3a://no-such-bucket-here/lake: not writable \("):
        LakeFiles("s3a://no-such-bucket-here/lake", s3_server).check_writable()


@pytest.mark.parametrize("message, line", [
    ('org.apache.hadoop.fs.UnsupportedFileSystemException: No FileSystem for scheme "s3a"',
     "lake s3a://b/lake: this Spark has no file system for s3a:// (for s3a:// set spark.jars: auto"),
    ("java.nio.file.AccessDeniedException: s3a://b/lake/pixels/_delta_log: getFileStatus on "
     "s3a://b/lake/pixels/_delta_log: software.amazon.awssdk.services.s3.model.S3Exception: Access Denied "
     "(Service: S3, Status Code: 403)", "lake s3a://b/lake/pixels/_delta_log: access denied"),
    ("java.io.FileNotFoundException: Bucket nobucket does not exist", "lake s3a://b/lake: the bucket does not exist"),
    ("org.apache.hadoop.fs.s3a.auth.NoAuthWithAWSException: No AWS Credentials provided by ...",
     "lake s3a://b/lake: no valid credentials"),
    ("java.net.UnknownHostException: minio.invalid", "lake s3a://b/lake: the storage endpoint cannot be reached"),
])
def test_storage_failures_of_spark_become_one_line(message, line):
    from insarlake.files import storage_problem

    got = storage_problem(RuntimeError(message), "s3a://b/lake")
    assert got.startswith(line) and "\n" not in got
    assert storage_problem(ValueError("division by zero"), "s3a://b/lake") is None


def test_the_catalog_server_gone_mid_job_is_one_line_not_a_storage_failure(capsys):
    """A Derby network server killed while a job runs (what the job sees, as Spark's Hive client
    wrote it in a trial) is named as the catalog server, not as the lake's storage."""
    from insarlake.catalog import server_problem
    from insarlake.cli import run_job

    message = ("org.apache.hadoop.hive.ql.metadata.HiveException: Unable to fetch table runs. "
               "java.net.ConnectException : Error connecting to server localhost on port 59,731 with message "
               "Connection refused.")
    got = server_problem(RuntimeError(message))
    assert got.startswith("catalog server at localhost:59731 does not answer (catalog.kind=server)")
    assert server_problem(RuntimeError("java.net.UnknownHostException: minio.invalid")) is None

    def job(argv):
        raise RuntimeError(message)
    assert run_job(job, []) == 2
    assert capsys.readouterr().err == f"error: {got}\n"


def test_a_corrupt_model_in_the_bucket_is_named_by_its_uri(s3_server):
    from insarlake.classify.model import Architecture, ClassifierModel, Normalisation, build

    files = LakeFiles(f"s3a://{new_bucket(s3_server)}/lake", s3_server)
    store = ModelStore(files, "classifier", "demo", "lstm")
    arch = Architecture("lstm", 12, 3, (4,), (4,), (4,), 0.0)
    model = ClassifierModel(arch, Normalisation(0.0, 1.0, (0.0,) * 4, (1.0,) * 4), (0, 1, 2),
                            tuple(str(i) for i in range(12)), build(arch))
    store.save("v1", model.save)
    assert store.load_latest(ClassifierModel.load).labels == (0, 1, 2)
    weights = files.read_bytes(*store.parts, "v1", "weights.pt")
    files.write_bytes(bytes(len(weights)), *store.parts, "v1", "weights.pt")     # same size, other bytes
    with pytest.raises(InputError, match=rf"^model file {store.uri('v1')}/weights\.pt: SHA-256 differs"):
        store.load("v1", ClassifierModel.load)
    files.write_bytes(b"not the weights", *store.parts, "v1", "weights.pt")
    with pytest.raises(IncompleteModel, match=rf"^model {store.uri('v1')}: files differ from _complete\.json "
                                              r"\(weights\.pt\)"):
        store.load("v1", ClassifierModel.load)


def test_a_version_whose_save_was_cut_short_is_never_read(files):
    store = ModelStore(files, "forecast", "demo", "dapf")

    def write(folder: Path):
        (folder / "model.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "weights.pt").write_bytes(b"w" * 100)

    store.save("run1", write)
    assert json.loads(files.read_text(*store.parts, "run1", COMPLETE)) == {
        "files": {"model.json": 2, "sub/weights.pt": 100}}
    store.check_complete("run1")
    files.remove_tree(*store.parts, "run1", "sub", "weights.pt")       # as a save killed mid-upload leaves it
    with pytest.raises(IncompleteModel, match=r"files differ from _complete\.json \(sub/weights\.pt\)"):
        store.load("run1", lambda folder: None)
    files.remove_tree(*store.parts, "run1", COMPLETE)
    with pytest.raises(IncompleteModel, match=r"run1: incomplete \(no _complete\.json: its save did not finish\)"):
        store.load("run1", lambda folder: None)
    assert store.reusable(lambda folder: "model", lambda m: True) is None     # trained anew, not an error
    files.write_text('{"files": [1]}', *store.parts, "run1", COMPLETE)
    with pytest.raises(IncompleteModel, match=r"_complete\.json is not"):
        store.check_complete("run1")


def test_a_forecaster_saved_by_an_older_format_is_trained_anew_not_an_error(tmp_path):
    """Format 1 (before DAPF's record prior) is recognised as outdated: reusable() returns None (the
    model is trained anew) where loading it for use fails in one line; an unknown format is refused."""
    from insarlake.forecast.baselines import build
    from insarlake.forecast.model import FORMAT_VERSION, ForecastModel
    from insarlake.forecast.windows import Normalisation, WindowSplit
    from insarlake.modelstore import OutdatedModel

    split = WindowSplit(input_len=4, horizon=2, n_epochs=40, t1=28, t2=34)
    norm = Normalisation(1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    model = ForecastModel("gru", {}, split, norm, [], build("gru", 4, 2))
    store = ModelStore(LakeFiles(str(tmp_path)), "forecast", "demo", "gru")
    store.save("run1", model.save)
    assert store.reusable(ForecastModel.load, lambda m: True)[1] == "run1"
    folder = Path(store.uri("run1"))
    meta = json.loads((folder / "model.json").read_text())

    def rewrite(version: int) -> None:     # as an older or newer insarlake would have saved it
        text = json.dumps({**meta, "format_version": version})
        (folder / "model.json").write_text(text)
        complete = json.loads((folder / COMPLETE).read_text())
        complete["files"]["model.json"] = len(text.encode())
        (folder / COMPLETE).write_text(json.dumps(complete))

    for version, error in ((FORMAT_VERSION - 1, OutdatedModel), (FORMAT_VERSION + 1, InputError)):
        rewrite(version)
        with pytest.raises(error, match=f"format_version {version}"):
            store.load("run1", ForecastModel.load)
    rewrite(FORMAT_VERSION - 1)
    assert store.reusable(ForecastModel.load, lambda m: True) is None
