"""The lake's catalog for several processes at once: a Derby network server holding the metastore.

With ``catalog.kind: embedded`` the metastore is a Derby database that one JVM opens at a time, so
a notebook cannot query the lake while a job runs. With ``catalog.kind: server`` the same database
(``<lake>/_catalog/metastore_db``) is served by a Derby network server at ``catalog.server``
(host:port, default localhost:1527) and every process (jobs, notebooks, the SQL shell) is a client
of it. A job starts the server when it is not running on this machine; ``make catalog-server``
starts it too. One server serves any number of lakes (databases by absolute path). It has no
authentication: keep it on localhost (the default), where only this machine's users reach it.

    python -m insarlake.catalog start  [--config FILE] [--lake PATH] [--set catalog.server=HOST:PORT]
    python -m insarlake.catalog status [...]
    python -m insarlake.catalog stop   [...]
"""
from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from insarlake.config import Config
from insarlake.errors import ConfigError

log = logging.getLogger(__name__)

# The Derby network client's JDBC driver (derbytools / derbyclient jars).
CLIENT_DRIVER = "org.apache.derby.jdbc.ClientDriver"
_SERVER_MAIN = "org.apache.derby.drda.NetworkServerControl"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def server_address(config: Config) -> tuple[str, int]:
    """(host, port) of catalog.server."""
    host, _, port = config.catalog.server.rpartition(":")
    return host, int(port)


def metastore_path(config: Config) -> Path:
    from insarlake.lake import catalog_dir

    return catalog_dir(config) / "metastore_db"


def jdbc_url(config: Config) -> str:
    """The metastore's JDBC URL through the server (the database named by its absolute path)."""
    host, port = server_address(config)
    return f"jdbc:derby://{host}:{port}/{metastore_path(config)};create=true"


def _jars(config: Config) -> list[str]:
    """Derby's own jars from pyspark's distribution (the version Spark's Hive client was built
    with) and the network server and client jars of the same version (conf/jars.yaml, group
    derby-server, fetched by `make setup`)."""
    import pyspark

    from insarlake.jars import local_jars

    spark_jars = Path(pyspark.__file__).parent / "jars"
    own = sorted(str(p) for p in spark_jars.glob("derby*.jar"))
    if not own:
        raise ConfigError(f"no Derby jars in {spark_jars}: this pyspark cannot run catalog.kind=server")
    fetched = [p for p in local_jars(config.spark.jars_dir, groups=("derby-server",)) if "/derby" in p]
    return own + fetched


def client_jars(config: Config) -> list[str]:
    """The jars a Spark driver needs to reach the server (the network client)."""
    return [p for p in _jars(config) if Path(p).name.startswith(("derbyclient", "derbyshared", "derbytools"))]


def is_running(config: Config, timeout_s: float = 2.0) -> bool:
    """Whether something answers at catalog.server (a TCP connection)."""
    host, port = server_address(config)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_running(config: Config, wait_s: float = 60.0) -> None:
    """Start the server when nothing answers at catalog.server and its host is this machine;
    wait until it answers. Two processes starting it at once are fine (the second one's server
    finds the port taken and exits)."""
    if is_running(config):
        return
    host, port = server_address(config)
    if host not in _LOCAL_HOSTS:
        raise ConfigError(f"config key 'catalog.server': no catalog server answers at {host}:{port} "
                          "(start it there with `python -m insarlake.catalog start`)")
    home = metastore_path(config).parent
    home.mkdir(parents=True, exist_ok=True)
    command = ["java", "-cp", os.pathsep.join(_jars(config)), f"-Dderby.system.home={home}",
               "-Dderby.drda.logConnections=false", _SERVER_MAIN, "start", "-h", host, "-p", str(port),
               "-noSecurityManager"]
    with open(home / "derby-server.log", "ab") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)         # outlives the job that started it
    log.info("catalog server starting at %s:%d (pid %d, log %s)", host, port, server.pid, home / "derby-server.log")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if is_running(config):
            return
        if server.poll() is not None and not is_running(config):
            time.sleep(0.5)                  # another process's server may be binding the port
            if is_running(config):
                return
            raise ConfigError(f"catalog server at {host}:{port} did not start (see {home / 'derby-server.log'})")
        time.sleep(0.2)
    raise ConfigError(f"catalog server at {host}:{port} did not answer within {wait_s:.0f} s "
                      f"(see {home / 'derby-server.log'})")


def stop(config: Config) -> bool:
    """Shut the server down; False when none was running."""
    if not is_running(config):
        return False
    host, port = server_address(config)
    subprocess.run(["java", "-cp", os.pathsep.join(_jars(config)), _SERVER_MAIN, "shutdown", "-h", host,
                    "-p", str(port)], check=False, capture_output=True, timeout=120)
    deadline = time.monotonic() + 30
    while is_running(config) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


# The Derby network client's message when the server does not answer (Derby writes the port with
# a thousands separator: "port 1,527").
_NO_SERVER = re.compile(r"Error connecting to server (\S+) on port ([\d,.\u00a0\u202f]+)")


def server_problem(exc: BaseException) -> str | None:
    """One line for an exception that says the catalog server stopped answering in the middle of a
    job (killed, stopped, its machine gone); None for any other exception."""
    match = _NO_SERVER.search(f"{exc}")
    if match is None:
        return None
    port = re.sub(r"\D", "", match.group(2))
    return (f"catalog server at {match.group(1)}:{port} does not answer (catalog.kind=server): the job stopped, "
            "every table keeps its last whole write; re-run the job (it starts the server) or start it with "
            "`make catalog-server`")


def _main(argv: list[str] | None = None) -> int:
    from insarlake.cli import config_from_args, job_parser, setup_logging

    parser = job_parser("python -m insarlake.catalog", __doc__, dataset=False)
    parser.add_argument("action", choices=["start", "status", "stop"])
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    config = config_from_args(args)
    host, port = server_address(config)
    if args.action == "start":
        ensure_running(config)
        sys.stdout.write(f"catalog server at {host}:{port}, metastore {metastore_path(config)}\n")
    elif args.action == "status":
        running = is_running(config)
        sys.stdout.write(f"catalog server at {host}:{port}: {'running' if running else 'not running'}\n")
        return 0 if running else 1
    else:
        sys.stdout.write(f"catalog server at {host}:{port}: {'stopped' if stop(config) else 'not running'}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """start, status (exit 1 when not running) or stop; a bad config: one line, exit 2."""
    from insarlake.cli import run_job

    return run_job(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
