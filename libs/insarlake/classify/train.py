"""Training of a cluster classifier: one function that is plain torch.distributed DDP, run by
``TorchDistributor`` with N processes or called directly for one process. No Spark here.

Data: Spark writes the training and validation splits as Parquet partitioned by ``shard``
(0..S-1), columns series (array<float>, mm), statics (array<double>, the 4 static features),
target (int, class index). Rank r of W reads only shards s with s % W == r.

Same global batch for any W: every step takes ``batch_size / S`` rows from every shard (a seeded
permutation per shard and epoch), so the global batch is the same rows whatever the number of
processes; dropout masks are seeded per (epoch, step, shard). A rank sums the class-weighted
cross-entropy of its shards' rows over the global batch size; DDP averages gradients over ranks, so
the loss is scaled by W, and the update is the one a single process computes over all shards (up to
the order of floating-point sums). Validation loss (mean cross-entropy, without the class weights)
and accuracy are summed over ranks each epoch; gradients are clipped to norm 1; training stops after ``patience``
epochs without a lower validation loss, and every rank returns the best weights.

The validation shards hold a bounded stratified sample of the held-out split; each row counts with
its class's ``validation_weights`` entry (held-out pixels of the class / sampled ones), so the
per-epoch loss and accuracy estimate those of the whole held-out split.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext

import numpy as np

from insarlake.files import LakeFiles

log = logging.getLogger(__name__)

# Gradients are clipped to this global L2 norm before each step (LSTMs on long series can explode).
_CLIP_NORM = 1.0


def read_shards(folder: LakeFiles, shards: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{shard: (series (n, T) float64 mm, statics (n, 4) float64, target (n,) int64)} for the given
    shards of a Parquet folder partitioned by shard (on any file system the lake can be on; missing
    shards give empty arrays)."""
    import pyarrow.dataset as ds

    from insarlake.arrow import column_to_numpy, list_column_to_numpy
    from insarlake.classify.model import STATIC_FEATURES

    out = {}
    dataset, name = folder.parquet_dataset(), folder.root
    for s in shards:
        table = dataset.to_table(filter=ds.field("shard") == s, columns=["series", "statics", "target"])
        out[s] = (list_column_to_numpy(table.column("series"), np.float64, name=f"{name} shard {s} series"),
                  list_column_to_numpy(table.column("statics"), np.float64, len(STATIC_FEATURES),
                                       name=f"{name} shard {s} statics"),
                  column_to_numpy(table.column("target"), np.int64))
    return out


def train_worker(args: dict) -> dict | None:
    """Train one classifier. ``args``: train_dir, val_dir (LakeFiles of the shard folders), shards
    (S), architecture (dict), normalisation (dict), class_weights (k floats), validation_weights
    (k floats, optional: the weight of a validation row of each class; default 1), batch_size,
    learning_rate, max_epochs, patience, seed, threads (torch threads per process), backend
    (gloo|nccl).
    Returns {"state_dict", "history": [{epoch, train_loss, val_loss, val_accuracy}], "best_epoch",
    "seconds", "world_size"}, the same on every rank (weights are identical under DDP, losses and
    seconds are reduced over ranks): TorchDistributor's local mode keeps whichever rank's return
    value is written last."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from insarlake.classify.model import Architecture, Normalisation, build

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(args.get("backend", "gloo"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if args.get("backend") == "nccl" \
        else torch.device("cpu")
    torch.set_num_threads(max(1, int(args.get("threads", 1))))
    started = time.perf_counter()

    arch = Architecture(**{k: tuple(v) if isinstance(v, list) else v for k, v in args["architecture"].items()})
    norm = Normalisation(**{k: tuple(v) if isinstance(v, list) else v for k, v in args["normalisation"].items()})
    n_shards = int(args["shards"])
    batch = int(args["batch_size"])
    if batch % n_shards:
        raise ValueError(f"batch_size {batch} must be a multiple of the number of shards {n_shards}")
    micro = batch // n_shards
    mine = [s for s in range(n_shards) if s % world == rank]

    def tensors(folder):
        out = {}
        for s, (series, statics, target) in read_shards(folder, mine).items():
            x, st = norm.apply(series, statics) if len(series) else (
                np.zeros((0, arch.n_epochs), np.float32), np.zeros((0, 4), np.float32))
            out[s] = (torch.from_numpy(x).to(device), torch.from_numpy(st).to(device), torch.from_numpy(target).to(device))
        return out

    train, val = tensors(args["train_dir"]), tensors(args["val_dir"])

    def all_sum(values):
        t = torch.tensor(values, dtype=torch.float64)
        if distributed:
            dist.all_reduce(t)
        return t.tolist()

    def all_reduce_one(value, op):
        t = torch.tensor([value], dtype=torch.float64)
        if distributed:
            dist.all_reduce(t, op=op)
        return t.item()

    def all_min(value):
        return int(all_reduce_one(value, dist.ReduceOp.MIN))

    steps = all_min(min(len(train[s][2]) for s in mine) if mine else 1 << 62) // micro
    if steps < 1:
        raise ValueError(f"a training shard has fewer than batch_size / shards = {micro} rows")
    weights = torch.tensor(args["class_weights"], dtype=torch.float32, device=device)
    val_weights = torch.tensor(args.get("validation_weights") or [1.0] * arch.n_classes, dtype=torch.float64,
                               device=device)
    seed = int(args["seed"])

    torch.manual_seed(seed)
    network = build(arch).to(device)
    model = DistributedDataParallel(network) if distributed else network
    optimiser = torch.optim.Adam(model.parameters(), lr=float(args["learning_rate"]))
    history, best, best_state, best_epoch, waited = [], float("inf"), None, -1, 0
    for epoch in range(int(args["max_epochs"])):
        model.train()
        order = {s: torch.from_numpy(np.random.default_rng([seed, epoch, s]).permutation(len(train[s][2])))
                 for s in mine}
        loss_sum = 0.0
        for step in range(steps):
            optimiser.zero_grad(set_to_none=True)
            for i, s in enumerate(mine):
                idx = order[s][step * micro:(step + 1) * micro]
                x, st, y = (t[idx] for t in train[s])
                torch.manual_seed(hash((seed, epoch, step, s)) & 0x7FFFFFFF)    # dropout masks per shard
                last = i == len(mine) - 1
                context = model.no_sync() if distributed and not last else nullcontext()
                with context:
                    loss = F.cross_entropy(model(x, st), y, weight=weights, reduction="sum") / batch
                    (loss * world).backward()
                loss_sum += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), _CLIP_NORM)
            optimiser.step()
        model.eval()
        v_loss, v_right, v_n = 0.0, 0.0, 0.0
        with torch.no_grad():
            for s in mine:
                x, st, y = val[s]
                for j in range(0, len(y), 4096):
                    logits, yj = network(x[j:j + 4096], st[j:j + 4096]), y[j:j + 4096]
                    w = val_weights[yj]
                    v_loss += float((F.cross_entropy(logits, yj, reduction="none").double() * w).sum())
                    v_right += float(((logits.argmax(1) == yj).double() * w).sum())
                    v_n += float(w.sum())
        train_loss, v_loss, v_right, v_n = all_sum([loss_sum, v_loss, v_right, v_n])
        record = {"epoch": epoch, "train_loss": train_loss / steps, "val_loss": v_loss / max(v_n, 1),
                  "val_accuracy": v_right / max(v_n, 1)}
        history.append(record)
        if rank == 0:
            log.info("epoch %d: train loss %.4f, validation loss %.4f, accuracy %.4f", epoch, record["train_loss"],
                     record["val_loss"], record["val_accuracy"])
        if record["val_loss"] < best:
            best, best_epoch, waited = record["val_loss"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        else:
            waited += 1
            if waited >= int(args["patience"]):
                break
    seconds = round(all_reduce_one(time.perf_counter() - started, dist.ReduceOp.MAX), 3)
    if distributed:
        dist.destroy_process_group()
    return {"state_dict": best_state, "history": history, "best_epoch": best_epoch, "seconds": seconds,
            "world_size": world}
