"""One launcher for the training functions (classifier, forecaster): in the driver for one CPU
process, else on Spark's TorchDistributor (local processes, or processes on the executors with
``local_mode: false``; nccl on GPUs)."""
from __future__ import annotations

from typing import Callable


def run_training(worker: Callable[[dict], dict], args: dict, num_processes: int = 1, local_mode: bool = True,
                 use_gpu: bool = False) -> dict:
    """``worker(args)`` run by ``num_processes`` processes (the result of rank 0). ``args`` gets
    ``backend`` (gloo, or nccl on GPUs) unless it names one."""
    args = {"backend": "nccl" if use_gpu else "gloo", **args}
    if num_processes == 1 and not use_gpu:
        return worker(args)
    from pyspark.ml.torch.distributor import TorchDistributor

    return TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu).run(worker, args)
