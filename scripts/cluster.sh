#!/usr/bin/env bash
# cluster.sh - N llava-server replicas behind HAProxy on loopback
# (deploy/haproxy/haproxy.cfg), for trying the deployment, its tests and its
# benchmark. `make cluster` and `make cluster-stop` call it.
#
#   scripts/cluster.sh start [N]        N replicas (default 3), then the balancer
#   scripts/cluster.sh stop             everything, each replica drained (SIGTERM)
#   scripts/cluster.sh status           what runs, and the balancer's view
#   scripts/cluster.sh replica-start I  (re)start replica I (1..N) as configured
#   scripts/cluster.sh replica-stop I   SIGTERM replica I and wait: its drain
#   scripts/cluster.sh replica-kill I   SIGKILL replica I (a crash)
#
# The environment sets it up (start records it; the other commands reuse it):
#   MODEL          the model (default models/demo)
#   LB_PORT        the balancer (default 8080)
#   STATS_PORT     the balancer's /stats and /metrics (default 8404)
#   REPLICA_PORT   replica 1's port; replica I listens on REPLICA_PORT+I-1
#                  (default LB_PORT+1)
#   RR_PORT        if set, a second front end that spreads requests round
#                  robin over the same replicas (the benchmark's baseline)
#   SERVER_ARGS    more llava-server flags (e.g. "--parallel 16")
#   THREADS        llava-server --threads of each replica (default: the cores
#                  shared out, nproc / N, at least 1: replicas that each took
#                  every core would spin against each other)
#   DRAIN_GRACE    llava-server --drain-grace (default 5: longer than the
#                  health checks take to notice)
#   CHECK_INTER, CHECK_FALL, CHECK_RISE  health checks (default 1s, 2, 2)
#   CLUSTER_DIR    pid files, logs and the generated haproxy.cfg
#                  (default build/cluster)
#   LLAVA_SERVER   the binary (default build/bin/llava-server)
# Replica I is named rI (--replica-id): the X-Replica-Id header of its
# answers, its log lines (CLUSTER_DIR/rI.log) and its metrics say so. The
# balancer's log (one line per request) is CLUSTER_DIR/haproxy.log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/build/cluster}"
ENV_FILE="$DIR/cluster.env"

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

load_env() {
  [ -f "$ENV_FILE" ] || die "no cluster in $DIR (start one: scripts/cluster.sh start)"
  # shellcheck disable=SC1090
  . "$ENV_FILE"
}

# alive PID_FILE: its process runs (a zombie does not: where PID 1 reaps no
# orphans, as in some containers, a dead replica stays one).
alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && kill -0 "$pid" 2>/dev/null &&
    ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null
}

# http_status PORT PATH: the status of GET PATH, or 000 when nothing answers.
http_status() {
  local line=""
  if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r -t 5 line <&3 || true
    exec 3<&- 3>&-
  fi
  line="${line#HTTP/1.? }"
  echo "${line:0:3}" | grep -E '^[0-9]{3}$' || echo 000
}

# wait_status PORT PATH CODE SECONDS PID_FILE: until GET PATH answers CODE.
wait_status() {
  local t=$(($4 * 10))
  while [ "$t" -gt 0 ]; do
    [ "$(http_status "$1" "$2")" = "$3" ] && return 0
    if [ -n "${5:-}" ] && ! alive "$5"; then return 1; fi
    sleep 0.1
    t=$((t - 1))
  done
  return 1
}

replica_port() { echo $((REPLICA_PORT + $1 - 1)); }

start_replica() {
  local i=$1 port
  port=$(replica_port "$i")
  alive "$DIR/r$i.pid" && die "replica r$i runs already (pid $(cat "$DIR/r$i.pid"))"
  # shellcheck disable=SC2086
  setsid "$LLAVA_SERVER" --model "$MODEL" --host 127.0.0.1 --port "$port" --replica-id "r$i" \
    --drain-grace "$DRAIN_GRACE" --threads "$THREADS" $SERVER_ARGS >>"$DIR/r$i.log" 2>&1 </dev/null &
  echo $! >"$DIR/r$i.pid"
}

wait_replica() {
  wait_status "$(replica_port "$1")" /health 200 120 "$DIR/r$1.pid" ||
    die "replica r$1 did not become healthy (its log: $DIR/r$1.log)"
}

# stop_pid PID_FILE SIGNAL SECONDS: signal, wait for the exit, SIGKILL after.
stop_pid() {
  local f=$1 pid t=$(($3 * 10))
  alive "$f" || {
    rm -f "$f"
    return 0
  }
  pid=$(cat "$f")
  kill "-$2" "$pid" 2>/dev/null || true
  while alive "$f" && [ "$t" -gt 0 ]; do
    sleep 0.1
    t=$((t - 1))
  done
  if alive "$f"; then
    echo "cluster.sh: pid $pid still running after $3 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# The shipped haproxy.cfg with its server lines for N replicas (and the
# round-robin front end when RR_PORT is set).
write_config() {
  awk -v n="$N" -v base="$REPLICA_PORT" '
    /^backend / { section = $2 }
    /^[ \t]+server r[0-9]+ / { next }
    { print }
    /# replicas \(scripts\/cluster.sh/ {
      for (i = 1; i <= n; i++)
        if (section == "llava_affinity") printf "    server r%d 127.0.0.1:%d\n", i, base + i - 1
        else printf "    server r%d 127.0.0.1:%d track llava_affinity/r%d\n", i, base + i - 1, i
    }' "$ROOT/deploy/haproxy/haproxy.cfg" >"$DIR/haproxy.cfg"
  if [ -n "$RR_PORT" ]; then
    {
      printf '\n# Benchmark baseline: round robin over the same replicas (RR_PORT).\n'
      printf 'frontend llava_rr\n    bind 127.0.0.1:%s\n' "$RR_PORT"
      printf '    http-response set-var(txn.replica) res.hdr(x-replica-id)\n'
      printf '    log-format "%%ci:%%cp [%%tr] %%ft %%b/%%s %%TR/%%Tw/%%Tc/%%Tr/%%Ta %%ST %%B %%tsc replica=%%[var(txn.replica)] \\"%%HM %%HU\\""\n'
      printf '    default_backend llava_round_robin\n'
      printf 'backend llava_round_robin\n    balance roundrobin\n'
      for i in $(seq 1 "$N"); do
        printf '    server r%d 127.0.0.1:%d track llava_affinity/r%d\n' "$i" "$(replica_port "$i")" "$i"
      done
    } >>"$DIR/haproxy.cfg"
  fi
}

cmd_start() {
  N=${1:-3}
  [[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 64 ] || die "N must be 1..64, not '$N'"
  command -v haproxy >/dev/null || die "haproxy is not installed (Debian: apt-get install haproxy)"
  if [ -f "$ENV_FILE" ]; then
    (
      load_env
      for i in $(seq 1 "$N"); do alive "$DIR/r$i.pid" && exit 1; done
      alive "$DIR/haproxy.pid" && exit 1
      exit 0
    ) || die "a cluster runs in $DIR already (scripts/cluster.sh stop)"
  fi
  MODEL=${MODEL:-$ROOT/models/demo}
  LB_PORT=${LB_PORT:-8080}
  STATS_PORT=${STATS_PORT:-8404}
  REPLICA_PORT=${REPLICA_PORT:-$((LB_PORT + 1))}
  RR_PORT=${RR_PORT:-}
  SERVER_ARGS=${SERVER_ARGS:-}
  local cores
  cores=$(nproc 2>/dev/null || echo 1)
  THREADS=${THREADS:-$((cores / N > 0 ? cores / N : 1))}
  DRAIN_GRACE=${DRAIN_GRACE:-5}
  CHECK_INTER=${CHECK_INTER:-1s}
  CHECK_FALL=${CHECK_FALL:-2}
  CHECK_RISE=${CHECK_RISE:-2}
  LLAVA_SERVER=${LLAVA_SERVER:-$ROOT/build/bin/llava-server}
  [ -x "$LLAVA_SERVER" ] || die "no $LLAVA_SERVER (build it: make)"
  mkdir -p "$DIR"
  rm -f "$DIR"/*.log "$DIR"/*.pid
  for v in N MODEL LB_PORT STATS_PORT REPLICA_PORT RR_PORT SERVER_ARGS THREADS DRAIN_GRACE \
    CHECK_INTER CHECK_FALL CHECK_RISE LLAVA_SERVER; do
    printf '%s=%q\n' "$v" "${!v}"
  done >"$ENV_FILE"
  for i in $(seq 1 "$N"); do start_replica "$i"; done
  for i in $(seq 1 "$N"); do wait_replica "$i"; done
  write_config
  LLAVA_DEPLOY_DIR="$ROOT/deploy" LLAVA_LB_PORT=$LB_PORT LLAVA_LB_STATS_PORT=$STATS_PORT \
    LLAVA_CHECK_INTER=$CHECK_INTER LLAVA_CHECK_FALL=$CHECK_FALL LLAVA_CHECK_RISE=$CHECK_RISE \
    setsid haproxy -db -f "$DIR/haproxy.cfg" >>"$DIR/haproxy.log" 2>&1 </dev/null &
  echo $! >"$DIR/haproxy.pid"
  wait_status "$LB_PORT" /health 200 30 "$DIR/haproxy.pid" ||
    die "the balancer did not come up (its log: $DIR/haproxy.log)"
  echo "cluster: $N replica(s) of $MODEL on 127.0.0.1:$REPLICA_PORT-$(replica_port "$N")," \
    "$THREADS thread(s) each"
  echo "balancer: http://127.0.0.1:$LB_PORT (stats: http://127.0.0.1:$STATS_PORT/stats," \
    "metrics: /metrics)${RR_PORT:+; round robin: http://127.0.0.1:$RR_PORT}"
  echo "logs: $DIR; stop: scripts/cluster.sh stop"
}

cmd_stop() {
  [ -f "$ENV_FILE" ] || return 0
  load_env
  for i in $(seq 1 "$N"); do
    [ -f "$DIR/r$i.pid" ] && (kill -TERM "$(cat "$DIR/r$i.pid")" 2>/dev/null || true)
  done
  for i in $(seq 1 "$N"); do stop_pid "$DIR/r$i.pid" TERM $((DRAIN_GRACE + 40)); done
  stop_pid "$DIR/haproxy.pid" TERM 10
  rm -f "$ENV_FILE"
  echo "cluster: stopped"
}

cmd_status() {
  load_env
  for i in $(seq 1 "$N"); do
    local port state
    port=$(replica_port "$i")
    state="stopped"
    alive "$DIR/r$i.pid" && state="pid $(cat "$DIR/r$i.pid"), /health $(http_status "$port" /health)"
    echo "r$i 127.0.0.1:$port $state"
  done
  if alive "$DIR/haproxy.pid"; then
    echo "balancer 127.0.0.1:$LB_PORT pid $(cat "$DIR/haproxy.pid")"
  else
    echo "balancer 127.0.0.1:$LB_PORT stopped"
  fi
}

replica_index() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$N" ] || die "replica must be 1..$N"
}

case "${1:-}" in
start) cmd_start "${2:-3}" ;;
stop) cmd_stop ;;
status) cmd_status ;;
replica-start)
  load_env
  replica_index "${2:-}"
  start_replica "$2"
  wait_replica "$2"
  ;;
replica-stop)
  load_env
  replica_index "${2:-}"
  stop_pid "$DIR/r$2.pid" TERM $((DRAIN_GRACE + 40))
  ;;
replica-kill)
  load_env
  replica_index "${2:-}"
  stop_pid "$DIR/r$2.pid" KILL 10
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
  ;;
esac
