"""A Spark standalone cluster on this machine, started from pyspark's own distribution
(``spark-class``): one master and workers with their own JVMs, executors and work folders. The
tests run the pipeline on it (cluster mode, lost workers) and ``benchmarks/scale.py --standalone``
measures the driver apart from the executors, as on a real cluster."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(path: Path, text: str, process: subprocess.Popen, seconds: float = 180) -> None:
    """Wait until ``text`` is in the log ``path`` of ``process``; AssertionError with the log's
    tail when the process ends first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not in {path} after {seconds} s"
        time.sleep(0.5)


class Standalone:
    """A standalone cluster from pyspark's distribution: ``url`` (spark://127.0.0.1:PORT), the
    worker processes (``workers``), logs and work folders under ``folder``."""

    def __init__(self, folder: Path):
        import pyspark

        home = Path(pyspark.__file__).parent
        self.folder, self.spark_class = Path(folder), str(home / "bin" / "spark-class")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
        self.env.update(SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
        self.processes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        port = free_port()
        self.url = f"spark://127.0.0.1:{port}"
        master, log = self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                  "--port", str(port), "--webui-port", str(free_port()))
        wait_for_line(log, "I have been elected leader", master)

    def _start(self, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([self.spark_class, *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)
        self.processes.append(process)
        return process, log

    def start_worker(self, cores: int = 1, memory: str = "2g") -> subprocess.Popen:
        """One more worker offering ``cores`` and ``memory`` (its own work folder), once registered
        with the master."""
        i = len(self.workers)
        worker, log = self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                  "--cores", str(cores), "--memory", memory, "--work-dir",
                                  str(self.folder / f"work{i}"), "--webui-port", str(free_port()), self.url)
        wait_for_line(log, "Successfully registered with master", worker)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
