#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1:$PGPORT for the tests and print its DSN
# (postgresql+psycopg://...) on stdout. Uses Debian's server binaries (apt-get installs them
# when absent and we are root); runs as the 'postgres' user when started as root (initdb
# refuses root). Usage: dsn=$(.ci/postgres.sh start DIR [PORT]); .ci/postgres.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data directory}
port=${3:-54329}

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

bin=$(find_bin || true)
if [ -z "$bin" ] && [ "$cmd" = start ] && [ "$(id -u)" = 0 ]; then
  echo "postgres.sh: installing Debian's postgresql" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2 || true
  bin=$(find_bin || true)
fi
[ -n "$bin" ] || { echo "postgres.sh: no PostgreSQL server binaries found" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -F -c fsync=off -c full_page_writes=off" start >&2
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres boltzgen_test >&2
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/boltzgen_test"
  ;;
stop)
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
  ;;
*)
  echo "usage: $0 start|stop DIR [PORT]" >&2
  exit 2
  ;;
esac
