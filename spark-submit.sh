#!/usr/bin/env bash
# Submit an insarlake job, from any directory:
#
#   ./spark-submit.sh [spark-submit options] jobs/<job>.py [job options]
#
# Defaults to --master local[*] (with the config's spark.driver_memory unless --driver-memory is
# given: local mode runs the executors in the driver's JVM); adds the Sedona/GeoTools/Delta jars (from .jars/, fetched by
# `make setup`) and the packaged library (dist/insarlake.zip, rebuilt when libs/ changes) with
# --py-files; passes every other spark-submit option through (--master yarn, --deploy-mode
# cluster, --conf k=v, ...). Environment:
#   SPARK_SUBMIT    spark-submit to use (default: the virtualenv's, else the one on PATH)
#   INSARLAKE_JARS  comma-separated jars to pass instead of .jars/, or "provided" when the
#                   cluster already has them
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

if [ -x "$HERE/.venv/bin/python" ]; then
  PY="$HERE/.venv/bin/python"
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
  export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
else
  PY="${PYTHON:-python3}"
fi
SUBMIT="${SPARK_SUBMIT:-}"
if [ -z "$SUBMIT" ]; then
  if [ -x "$HERE/.venv/bin/spark-submit" ]; then SUBMIT="$HERE/.venv/bin/spark-submit"; else SUBMIT=spark-submit; fi
fi

extra=()
has_master=0
has_memory=0
for a in ${submit_args[@]+"${submit_args[@]}"}; do
  case "$a" in
    --master|--master=*) has_master=1 ;;
    --driver-memory|--driver-memory=*) has_memory=1 ;;
  esac
done
if [ "$has_master" = 0 ]; then
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
  jars="$(cd "$HERE" && "$PY" -m insarlake.jars list)"
fi
if [ "$jars" != "provided" ]; then extra+=(--jars "$jars"); fi

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
