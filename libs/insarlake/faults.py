"""A fault hook for trying the pipeline under task failures: a Python daemon (and worker) module
for Spark that makes chosen tasks fail on their first attempt, so that Spark retries them.

Spark forks its Python workers from the daemon module named by ``spark.python.daemon.module``
(default ``pyspark.daemon``; without the daemon, ``spark.python.worker.module`` names the worker).
This module, in either place, has every Python task (mapInPandas, applyInPandas, mapInArrow, UDFs,
RDD functions) first ask ``should_fail``: a task on its first attempt fails when a hash of (its
stage, its partition, the seed) falls below ``INSARLAKE_FAIL_SHARE``; its retry runs as usual.
Set, for the job (the workers inherit the driver's environment in local mode; on a cluster use
``spark.executorEnv.*``)::

    INSARLAKE_FAIL_SHARE=0.3 INSARLAKE_FAIL_SEED=1 INSARLAKE_FAIL_LOG=/tmp/faults \
      jobs/pipeline.py --set spark.master='local[2,4]' \
      --set spark.conf='{spark.python.daemon.module: insarlake.faults}'

``local[n,f]`` lets a task fail f - 1 times (plain ``local[n]`` fails the job at the first task
failure). Each failure made is logged as one line ``stage partition`` in a file under
INSARLAKE_FAIL_LOG (when set). tests/test_crashes.py runs the pipeline this way.
"""
from __future__ import annotations

import hashlib
import os

SHARE_VARIABLE = "INSARLAKE_FAIL_SHARE"
SEED_VARIABLE = "INSARLAKE_FAIL_SEED"
LOG_VARIABLE = "INSARLAKE_FAIL_LOG"


class InjectedFault(RuntimeError):
    """The failure the hook makes (a first attempt only)."""


def should_fail(stage_id: int, partition_id: int, attempt: int, share: float, seed: str) -> bool:
    """Whether the task (stage, partition) fails on this attempt: only on attempt 0, for a share
    ``share`` of the tasks chosen by a hash of (stage, partition, seed)."""
    if attempt != 0 or share <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{stage_id}:{partition_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < share


def _check_task() -> None:
    from pyspark.taskcontext import TaskContext

    share = float(os.environ.get(SHARE_VARIABLE, "0") or 0)
    context = TaskContext.get()
    if context is None or not should_fail(context.stageId(), context.partitionId(), context.attemptNumber(),
                                          share, os.environ.get(SEED_VARIABLE, "0")):
        return
    if folder := os.environ.get(LOG_VARIABLE):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{os.getpid()}.log"), "a") as out:
            out.write(f"{context.stageId()} {context.partitionId()}\n")
    raise InjectedFault(f"insarlake fault hook: stage {context.stageId()} partition {context.partitionId()} "
                        "failed on purpose (first attempt)")


def install() -> None:
    """Have pyspark.worker run ``_check_task`` once a task's context is read (before its functions are)."""
    import pyspark.worker as worker

    if not getattr(worker, "_insarlake_fault_hook", False):
        for name in ("read_udfs", "read_command"):      # UDF-style tasks, and RDD functions
            setattr(worker, name, _checked(getattr(worker, name)))
        worker._insarlake_fault_hook = True


def _checked(read):
    def checked_read(*args, **kwargs):
        _check_task()
        return read(*args, **kwargs)
    return checked_read


def main(infile, outfile) -> None:
    """As spark.python.worker.module (no daemon): pyspark.worker.main with the hook installed."""
    import pyspark.worker as worker

    install()
    worker.main(infile, outfile)


if __name__ == "__main__":      # as spark.python.daemon.module: the forked workers inherit the hook
    install()
    import pyspark.daemon

    pyspark.daemon.manager()
