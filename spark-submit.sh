#!/usr/bin/env bash
# Submit an insarlake job, from any directory:
#
#   ./spark-submit.sh [spark-submit options] jobs/<job>.py [job options]
#
# Defaults to --master local[*] (with the config's spark.driver_memory unless --driver-memory is
# given: local mode runs the executors in the driver's JVM); adds the jars of the profile's
# spark.jars (auto: the Sedona/GeoTools/Delta jars fetched by `make setup` into .jars/, with Hadoop's
# S3A connector for an s3:// or s3a:// lake; provided: none, the cluster has them) and the packaged
# library (dist/insarlake.zip, rebuilt when libs/ changes) with --py-files; passes every other
# spark-submit option through (--master yarn, --deploy-mode cluster, --conf k=v, ...).
#
# Python: in local mode the executors run this checkout's .venv. On a cluster they run the
# environment INSARLAKE_ENV names (a packed virtualenv from `make dist`, shipped with --archives,
# unpacked as ./environment on every node: the documented Spark way), or else the cluster's own
# python (which then needs every package of requirements.txt) unless PYSPARK_PYTHON says otherwise.
#
# Environment:
#   SPARK_SUBMIT    spark-submit to use (default: $SPARK_HOME/bin/spark-submit when SPARK_HOME is
#                   set, i.e. a cluster's Spark; else the virtualenv's; else the one on PATH)
#   INSARLAKE_ENV   packed Python environment to ship (dist/insarlake-env.tar.gz, a path or URI)
#   INSARLAKE_JARS  comma-separated jars to pass instead of the profile's, or "provided"
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export INSARLAKE_HOME="$HERE"

submit_args=()
job=""
while [ $# -gt 0 ]; do
  case "$1" in
    *.py) job="$1"; shift; break ;;
    *) submit_args+=("$1"); shift ;;
  esac
done
if [ -z "$job" ]; then
  echo "usage: $0 [spark-submit options] jobs/<job>.py [job options]" >&2
  exit 2
fi
if [ ! -f "$job" ] && [ -f "$HERE/$job" ]; then job="$HERE/$job"; fi
if [ ! -f "$job" ]; then echo "error: job file $job not found" >&2; exit 2; fi

master=""
deploy_mode=client
prev=""
for a in ${submit_args[@]+"${submit_args[@]}"}; do
  case "$prev" in --master) master="$a" ;; --deploy-mode) deploy_mode="$a" ;; esac
  case "$a" in --master=*) master="${a#--master=}" ;; --deploy-mode=*) deploy_mode="${a#--deploy-mode=}" ;; esac
  prev="$a"
done
local_mode=0
case "$master" in ""|local|local\[*) local_mode=1 ;; esac

if [ -x "$HERE/.venv/bin/python" ]; then PY="$HERE/.venv/bin/python"; else PY="${PYTHON:-python3}"; fi
extra=()
if [ -n "${INSARLAKE_ENV:-}" ]; then
  extra+=(--archives "$INSARLAKE_ENV#environment")
  export PYSPARK_PYTHON=./environment/bin/python
  if [ "$deploy_mode" = cluster ]; then
    extra+=(--conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python
            --conf spark.kubernetes.driverEnv.PYSPARK_PYTHON=./environment/bin/python)
  else
    export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
  fi
elif [ "$local_mode" = 1 ] && [ -x "$HERE/.venv/bin/python" ]; then
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
  export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
elif [ "$local_mode" = 0 ] && [ -z "${PYSPARK_PYTHON:-}" ]; then
  echo "note: no INSARLAKE_ENV: the executors run the cluster's python (make dist packs an environment)" >&2
fi
SUBMIT="${SPARK_SUBMIT:-}"
if [ -z "$SUBMIT" ]; then
  if [ -n "${SPARK_HOME:-}" ] && [ -x "$SPARK_HOME/bin/spark-submit" ]; then SUBMIT="$SPARK_HOME/bin/spark-submit"
  elif [ -x "$HERE/.venv/bin/spark-submit" ]; then SUBMIT="$HERE/.venv/bin/spark-submit"
  else SUBMIT=spark-submit; fi
fi

has_memory=0
for a in ${submit_args[@]+"${submit_args[@]}"}; do
  case "$a" in --driver-memory|--driver-memory=*) has_memory=1 ;; esac
done
if [ -z "$master" ]; then
  extra+=(--master "local[*]"
          --driver-java-options "-Dderby.system.home=$HERE/.derby -Dlog4j2.configurationFile=file:$HERE/conf/log4j2.properties")
  # local mode: the executors live in the driver's JVM, so it gets the config's spark.driver_memory
  # (spark-submit's own default is 1g)
  if [ "$has_memory" = 0 ]; then
    memory="$("$PY" -m insarlake.cli driver-memory "$@" 2>/dev/null || true)"
    if [ -n "$memory" ]; then extra+=(--driver-memory "$memory"); fi
  fi
fi

jars="${INSARLAKE_JARS:-}"
if [ -z "$jars" ]; then
  # the profile's spark.jars: auto (the fetched jars, with the S3A connector for an S3 lake),
  # provided (the cluster has them), or its own list
  jars="$(cd "$HERE" && "$PY" -m insarlake.cli jars "$@" 2>/dev/null || true)"
  if [ -z "$jars" ]; then jars="$(cd "$HERE" && "$PY" -m insarlake.jars list)"; fi
fi
if [ "$jars" != "provided" ]; then
  extra+=(--jars "$jars")
  # catalog.kind=server: the metastore client loads Derby's network driver from the class path
  derby="$(tr ',' '\n' <<<"$jars" | grep '/derby[a-z]*-[0-9.]*\.jar$' | paste -sd: - || true)"
  if [ -n "$derby" ]; then extra+=(--driver-class-path "$derby"); fi
fi

# The library as a zip for the executors (and the driver in cluster mode).
zip="$HERE/dist/insarlake.zip"
if [ ! -f "$zip" ] || [ -n "$(find "$HERE/libs" "$HERE/conf/default.yaml" -newer "$zip" -print -quit)" ]; then
  mkdir -p "$HERE/dist"
  "$PY" - "$HERE/libs" "$zip" <<'PYEOF'
import os, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
tmp = f"{dst}.tmp.{os.getpid()}"  # concurrent submits each build their own
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
    for root, dirs, files in os.walk(os.path.join(src, "insarlake")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith((".py", ".yaml")):
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, src))  # follows the default.yaml link
os.replace(tmp, dst)
PYEOF
fi

# Each job imports its own copy, named by content: a rebuild while a job runs (libs/ edited, another
# job submitted) must not replace the zip under the running job's zipimport.
job_zip="$HERE/dist/insarlake-$(sha1sum "$zip" | cut -c1-12).zip"
if [ ! -f "$job_zip" ]; then cp "$zip" "$job_zip.$$" && mv -f "$job_zip.$$" "$job_zip"; fi

export PYTHONUNBUFFERED=1
exec "$SUBMIT" ${extra[@]+"${extra[@]}"} ${submit_args[@]+"${submit_args[@]}"} --py-files "$job_zip" "$job" "$@"
