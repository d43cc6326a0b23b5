"""Training of one neural forecaster over subgraphs (Cluster-GCN style mini-batches): one function
that is plain torch.distributed data parallelism, run by ``TorchDistributor`` with N processes or
called directly for one. No Spark here.

Data: the training sample, written by Spark as Parquet partitioned by ``part`` (0 .. P-1, a
bounded, seeded sample of the scene's subgraphs), holding each sampled subgraph's own pixels:
slot (int, 0 .. n-1), coords (array<float>, normalised x, y, height), series (array<double>,
gap-free mm), nbr (array<int>, the slots of the pixel's graph neighbours; slots >= n are halo
pixels, not used in training). Rank r of W reads only the parts p with p % W == r.

Same global batch for any W: each epoch draws a seeded permutation of all parts; step s takes the
next ``batch_parts`` parts, and for each part ``windows_per_part`` training windows (seeded by
epoch, part and window), with model noise from a generator seeded the same way. A rank sums the
losses of its own parts of the step and divides by the step's global node-window count (every rank
knows every part's size); gradients are then summed over ranks (all_reduce), so the update is the
one a single process computes (up to the order of floating-point sums). A rank with no part in a
step contributes zero gradients. Validation: mean squared error (normalised units) of the point
forecast over every part and validation window, summed over ranks; training stops after
``patience`` epochs without improvement and every rank returns the best weights.
"""
from __future__ import annotations

import logging
import os
import time
import zlib

import numpy as np

from insarlake.files import LakeFiles

log = logging.getLogger(__name__)

# Gradients are clipped to this global L2 norm before each step.
_CLIP_NORM = 1.0
# The interval calibration counts |z| = |target - mean| / std in this many bins over [0, _Z_MAX).
_Z_BINS, _Z_MAX = 4000, 20.0
# The standard normal's 0.95 quantile: the half-width of a central 90 % interval in std units.
_Z90 = 1.6448536269514722


def read_parts(folder: LakeFiles, parts: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{part: (coords (n, 3) float32, series (n, T) float64 mm, local edge_index (2, E) among the
    part's pixels)}, rows by slot."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from insarlake.arrow import column_to_numpy, list_column_to_numpy
    from insarlake.forecast.graph import edges_from_neighbours

    out = {}
    dataset, name = folder.parquet_dataset(), folder.root
    for p in parts:
        table = dataset.to_table(filter=ds.field("part") == p, columns=["slot", "coords", "series", "nbr"])
        table = table.take(pc.sort_indices(table, sort_keys=[("slot", "ascending")]))
        n = table.num_rows
        where = f"training part {p} in {name}"
        if not np.array_equal(column_to_numpy(table.column("slot"), np.int64), np.arange(n)):
            raise ValueError(f"{where}: slots are not 0..{n - 1}")
        nbr = table.column("nbr").combine_chunks()
        edges = edges_from_neighbours(pc.list_value_length(nbr).to_numpy(zero_copy_only=False),
                                      pc.list_flatten(nbr).to_numpy(zero_copy_only=False), n)
        out[p] = (list_column_to_numpy(table.column("coords"), np.float32, 3, f"{where} coords"),
                  list_column_to_numpy(table.column("series"), np.float64, None, f"{where} series"), edges)
    return out


def _seed(*keys: int) -> int:
    """A 31-bit seed from integer keys (stable across processes and Python versions)."""
    return zlib.crc32(np.asarray(keys, np.int64).tobytes()) & 0x7FFFFFFF


def train_worker(args: dict) -> dict:
    """Train one model. ``args``: data_dir, parts ({part: n_nodes}), model, hyper (dict),
    split (WindowSplit fields), scale_mm, t_years (T floats), batch_parts, windows_per_part,
    learning_rate, max_epochs, patience, seed, threads, backend (gloo|nccl), calibrate_interval.
    Returns {"state_dict", "history": [{epoch, train_loss, val_mse}], "best_epoch", "seconds",
    "world_size", "interval_scale" (``_interval_scale`` for a model with a predictive distribution
    when calibrate_interval, else None)}, the same on every rank."""
    import torch
    import torch.distributed as dist

    from insarlake.forecast.model import build_network
    from insarlake.forecast.windows import WindowSplit, annual_record_starts, window_batch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(args.get("backend", "gloo"))
    torch.set_num_threads(max(1, int(args.get("threads", 1))))
    started = time.perf_counter()

    split = WindowSplit(**args["split"])
    sizes = {int(p): int(n) for p, n in args["parts"].items()}
    all_parts = sorted(sizes)
    mine = [p for p in all_parts if p % world == rank]
    data = read_parts(args["data_dir"], mine)
    t_years = np.asarray(args["t_years"], np.float64)
    scale = float(args["scale_mm"])
    seed = int(args["seed"])

    torch.manual_seed(seed)
    model = build_network(args["model"], split, args.get("hyper", {}))
    params = [q for q in model.parameters() if q.requires_grad]
    optimiser = torch.optim.Adam(params, lr=float(args["learning_rate"]))
    for q in params:   # every rank all-reduces a gradient for every parameter, used or not
        q.grad = torch.zeros_like(q)
    needs_record = bool(getattr(model, "record_prior", False))     # reads GraphBatch.record
    train_starts = split.starts("train")
    if needs_record:
        # a model on top of the record model learns its departures where that model is the one it
        # meets later: windows before a year of record (a trend fitted on months) would teach it to
        # distrust a fit that the validation, test and future windows do not have
        train_starts = annual_record_starts(train_starts, split, t_years)
    batch_parts, n_windows = int(args["batch_parts"]), int(args["windows_per_part"])

    def batch_at(part: int, start: int):
        coords, series, local_edges = data[part]
        return window_batch(series, coords, t_years, int(start), split, scale, local_edges,
                            with_record=needs_record)[0]

    # the validation windows are the same every epoch (and for the interval calibration): built once
    val_batches = [batch_at(p, start) for p in data for start in split.starts("validation")]

    def all_sum(values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        if distributed:
            dist.all_reduce(t)
        return t.tolist()

    history, best, best_state, bad_epochs = [], float("inf"), None, 0
    for epoch in range(int(args["max_epochs"])):
        model.train()
        order = np.random.default_rng(_seed(seed, epoch)).permutation(all_parts)
        epoch_loss, epoch_count = 0.0, 0
        for step in range(0, len(order), batch_parts):
            step_parts = [int(p) for p in order[step:step + batch_parts]]
            count = sum(sizes[p] for p in step_parts) * n_windows
            optimiser.zero_grad(set_to_none=False)
            loss_sum = 0.0
            for p in step_parts:
                if p not in data:
                    continue
                for w in range(n_windows):
                    key = _seed(seed, epoch, p, w)
                    start = int(train_starts[np.random.default_rng(key).integers(len(train_starts))])
                    loss, _ = model.loss(batch_at(p, start), torch.Generator().manual_seed(key))
                    (loss / count).backward()
                    loss_sum += float(loss.detach())
            if distributed:
                for q in params:
                    dist.all_reduce(q.grad)
            torch.nn.utils.clip_grad_norm_(params, _CLIP_NORM)
            optimiser.step()
            epoch_loss += loss_sum
            epoch_count += count
        model.eval()
        sq, n = 0.0, 0
        with torch.no_grad():
            for batch in val_batches:
                sq += float(((model(batch) - batch.target) ** 2).sum())
                n += batch.target.numel()
        loss_total, sq, n = all_sum([epoch_loss, sq, float(n)])
        val_mse = sq / max(n, 1.0)
        history.append({"epoch": epoch, "train_loss": loss_total / max(epoch_count, 1), "val_mse": val_mse})
        if rank == 0:
            log.info("%s epoch %d: train loss %.4f, validation mse %.4f", args["model"], epoch,
                     history[-1]["train_loss"], val_mse)
        if val_mse < best:
            best, bad_epochs = val_mse, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= int(args["patience"]):
                break
    seconds = time.perf_counter() - started
    if distributed:
        t = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        seconds = float(t.item())
        dist.barrier()
    best_epoch = int(np.argmin([h["val_mse"] for h in history]))
    interval_scale = None
    if args.get("calibrate_interval") and hasattr(model, "predictive"):
        model.load_state_dict(best_state)
        interval_scale = _interval_scale(model, val_batches, all_sum)
        if rank == 0:
            log.info("%s: predictive std x %.3f covers 90 %% of the validation values", args["model"], interval_scale)
    return {"state_dict": best_state, "history": history, "best_epoch": best_epoch, "seconds": seconds,
            "world_size": world, "interval_scale": interval_scale}


def _interval_scale(model, batches: list, all_sum) -> float:
    """The factor c such that mean +- 1.645 c std of the model's one-pass predictive distribution
    holds 90 % of the validation values of every rank's parts (``batches``, this rank's validation
    windows): the 0.9 quantile of |target - mean| / std (from a histogram summed over ranks) /
    1.645. Validation windows only, never test ones."""
    import torch

    from insarlake.forecast.metrics import histogram_quantile

    model.eval()
    counts = np.zeros(_Z_BINS)
    with torch.no_grad():
        for batch in batches:
            mean, std = model.predictive(batch, 0)
            z = ((batch.target - mean).abs() / std).numpy().ravel()
            counts += np.histogram(np.minimum(z, _Z_MAX * (1 - 1e-12)), bins=_Z_BINS, range=(0.0, _Z_MAX))[0]
    return histogram_quantile(all_sum(counts.tolist()), _Z_MAX, 0.9) / _Z90
