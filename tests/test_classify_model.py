"""Classifier networks and model files (pure torch): shapes, normalisation, label mapping,
round trip, refusal of corrupted files; Arrow list columns to numpy equal to the Python-list path."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from insarlake.arrow import list_column_to_numpy
from insarlake.classify.model import Architecture, ClassifierModel, Normalisation, build
from insarlake.classify.train import read_shards
from insarlake.files import LakeFiles
from insarlake.errors import InputError


def make_model(name="lstm_perceptron", labels=(7, 1_000_003, 42_000_000_000), n_epochs=30):
    torch.manual_seed(0)
    arch = Architecture(name, n_epochs, len(labels), (8, 4), (6,), (8,), 0.2)
    rng = np.random.default_rng(0)
    norm = Normalisation.fit(rng.normal(0, 5, (50, n_epochs)), rng.normal(0, 1, (50, 4)))
    return ClassifierModel(arch, norm, tuple(labels), tuple(f"2020-01-{d:02d}" for d in range(1, n_epochs + 1)),
                           build(arch))


@pytest.mark.parametrize("name", ["lstm", "lstm_perceptron"])
def test_networks_give_one_probability_row_per_pixel(name):
    model = make_model(name)
    rng = np.random.default_rng(1)
    series = rng.normal(0, 5, (17, 30))
    series[3, 5:9] = np.nan                        # missing epochs are filled, not propagated
    proba = model.predict_proba(series, rng.normal(0, 1, (17, 4)))
    assert proba.shape == (17, 3) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_normalisation_from_moments_matches_numpy():
    rng = np.random.default_rng(2)
    series, statics = rng.normal(3, 7, (40, 12)), rng.normal([1, 2, 0.5, 35], [2, 1, 0.1, 5], (40, 4))
    series[0, 0] = np.nan
    statics[[1, 4, 9], 2] = np.nan                 # a missing coherence is left out, not counted as 0
    norm = Normalisation.fit(series, statics)
    finite = series[np.isfinite(series)]
    assert norm.series_mean == pytest.approx(finite.mean()) and norm.series_std == pytest.approx(finite.std())
    np.testing.assert_allclose(norm.static_mean, np.nanmean(statics, axis=0))
    np.testing.assert_allclose(norm.static_std, np.nanstd(statics, axis=0))
    constant = Normalisation.fit(np.ones((5, 3)), np.ones((5, 4)))
    assert constant.series_std == 1.0 and constant.static_std == (1.0,) * 4


def test_networks_start_from_keras_initialisation():
    network = build(Architecture("lstm_perceptron", 10, 3, (6, 5), (4,), (7,), 0.0))
    for lstm in network.lstms:
        for name, p in lstm.named_parameters():
            gates = p.detach().chunk(4, 0)                       # torch's gate order: i, f, g, o
            if name.startswith("weight_hh"):
                for gate in gates:                               # orthogonal (h x h) per gate
                    np.testing.assert_allclose(gate @ gate.T, np.eye(gate.shape[0]), atol=1e-5)
            elif name.startswith("bias_ih"):
                assert gates[1].eq(1).all() and all(g.eq(0).all() for g in (gates[0], gates[2], gates[3]))
            elif name.startswith("bias_hh"):
                assert p.eq(0).all()
    assert network.out.bias.eq(0).all()


def test_labels_are_large_sparse_cluster_ids_and_the_threshold_gives_minus_one():
    model = make_model()
    with torch.no_grad():                          # make class 2 win with certainty for every input
        model.network.out.weight.zero_()
        model.network.out.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    series, statics = np.zeros((4, 30)), np.zeros((4, 4))
    cluster, probability = model.predict(series, statics, threshold=0.5)
    assert cluster.tolist() == [42_000_000_000] * 4 and (probability > 0.99).all()
    with torch.no_grad():
        model.network.out.bias.zero_()             # uniform: 1/3 < 0.5
    cluster, probability = model.predict(series, statics, threshold=0.5)
    assert cluster.tolist() == [-1] * 4 and np.allclose(probability, 1 / 3)


def test_model_file_round_trip_and_refusals(tmp_path):
    model = make_model()
    model.metrics = {"accuracy": 0.97}
    folder = model.save(tmp_path / "m")
    loaded = ClassifierModel.load(folder)
    rng = np.random.default_rng(3)
    series, statics = rng.normal(0, 5, (9, 30)), rng.normal(0, 1, (9, 4))
    np.testing.assert_array_equal(loaded.predict_proba(series, statics), model.predict_proba(series, statics))
    assert loaded.labels == model.labels and loaded.arch == model.arch and loaded.norm == model.norm
    assert loaded.metrics == {"accuracy": 0.97}

    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="weights.pt: SHA-256 differs"):
        ClassifierModel.load(folder)

    meta = json.loads((folder / "model.json").read_text())
    weights.write_bytes(b"not a torch file")
    meta["weights_sha256"] = __import__("hashlib").sha256(b"not a torch file").hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="weights.pt: cannot be loaded"):
        ClassifierModel.load(folder)
    (folder / "model.json").write_text("{broken")
    with pytest.raises(InputError, match="model.json: not a valid classifier description"):
        ClassifierModel.load(folder)
    with pytest.raises(InputError, match="not found"):
        ClassifierModel.load(tmp_path / "nowhere")


@pytest.mark.parametrize("value_type", [pa.float32(), pa.float64()])
def test_arrow_lists_to_numpy_equal_the_python_list_path(value_type):
    rng = np.random.default_rng(4)
    rows = rng.normal(0, 5, (23, 7)).astype(np.float32).astype(np.float64).tolist()
    rows[4][2] = None                                   # a null inside a list: NaN, as the list path gives
    chunks = pa.chunked_array([pa.array(rows[:10], pa.list_(value_type)), pa.array(rows[10:], pa.list_(value_type))])
    reference = np.asarray([[np.nan if v is None else v for v in r] for r in chunks.to_pylist()], np.float64)
    got = list_column_to_numpy(chunks, np.float64)
    assert got.shape == (23, 7) and got.dtype == np.float64
    np.testing.assert_array_equal(got, reference)
    sliced = pa.array(rows, pa.list_(value_type)).slice(5, 9)       # an offset into the values buffer
    np.testing.assert_array_equal(list_column_to_numpy(sliced, np.float64, 7), reference[5:14])
    fixed = pa.array([r for r in rows if None not in r], pa.list_(value_type, 7))
    np.testing.assert_array_equal(list_column_to_numpy(fixed), np.asarray(fixed.to_pylist(), np.float64))
    assert list_column_to_numpy(pa.array([], pa.list_(value_type)), np.float64, 7).shape == (0, 7)


def test_arrow_lists_of_the_wrong_length_or_null_rows_are_refused():
    with pytest.raises(ValueError, match="series: rows of 2..3 values, expected 3"):
        list_column_to_numpy(pa.array([[1.0, 2.0, 3.0], [1.0, 2.0]]), width=3, name="series")
    with pytest.raises(ValueError, match="statics: rows of 4..4 values, expected 5"):
        list_column_to_numpy(pa.array([[1.0] * 4]), width=5, name="statics")
    with pytest.raises(ValueError, match="1 null row"):
        list_column_to_numpy(pa.array([[1.0], None]))


def test_read_shards_equals_the_python_list_path(tmp_path):
    rng = np.random.default_rng(5)
    series, statics = rng.normal(0, 5, (30, 11)), rng.normal(0, 1, (30, 4))
    series[3, 4] = np.nan
    table = pa.table({"series": pa.array(series.astype(np.float32).tolist(), pa.list_(pa.float32())),
                      "statics": pa.array(statics.tolist(), pa.list_(pa.float64())),
                      "target": pa.array(rng.integers(0, 3, 30), pa.int32()),
                      "shard": pa.array(np.arange(30) % 3, pa.int32())})
    pq.write_to_dataset(table, tmp_path, partition_cols=["shard"])
    got = read_shards(LakeFiles(str(tmp_path)), [0, 2, 5])
    assert len(got[5][0]) == len(got[5][2]) == 0                     # a shard with no row
    for s in (0, 2):
        part = pq.read_table(tmp_path / f"shard={s}")
        x, st, y = got[s]
        np.testing.assert_array_equal(x, np.asarray(part.column("series").to_pylist(), np.float64))
        np.testing.assert_array_equal(st, np.asarray(part.column("statics").to_pylist(), np.float64))
        np.testing.assert_array_equal(y, np.asarray(part.column("target").to_pylist(), np.int64))
        assert x.dtype == st.dtype == np.float64 and y.dtype == np.int64 and len(x) == 10
