#!/usr/bin/env bash
# A local multi-node Ray cluster on this machine: one head and N worker nodes,
# every Ray process bound to 127.0.0.1, token authentication on. Each node has
# its own custom resources (head_node, worker_node and worker_<i>) so tests and
# users can see where trials were placed.
set -euo pipefail

RAY=${RAY:-.venv/bin/ray}
PY=${PY:-$(dirname "$RAY")/python}
# The Ray CLI, except that 127.0.0.1 in --address stays 127.0.0.1.
LOOPBACK_RAY_START='
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
'
WORKERS=1
PORT=6379
DASHBOARD_PORT=8265
HEAD_CPUS=1
WORKER_CPUS=1
TEMP_DIR=
CLIENT_PORT=10001

usage() {
    cat <<EOF
usage: cluster/local.sh up [--workers N] [--port P] [--dashboard-port D]
                           [--head-cpus C] [--worker-cpus C] [--temp-dir DIR]
                           [--client-port C]
       cluster/local.sh status [--port P]
       cluster/local.sh down [--temp-dir DIR --port P]

  up      start a head (GCS on 127.0.0.1:P, default $PORT; dashboard and Jobs API
          on 127.0.0.1:D, default $DASHBOARD_PORT) and N worker nodes (default $WORKERS);
          --temp-dir gives the cluster its own Ray temp dir (default Ray's /tmp/ray);
          --client-port is the Ray Client server's port (default $CLIENT_PORT). With its
          own ports and temp dir, a second cluster runs beside the first.
  status  ray status of the cluster at 127.0.0.1:P
  down    with --temp-dir: stop the processes of that cluster only (and the Ray
          Client server of the head on --port); without: ray stop --force (every
          Ray process of this user on this machine)

The Ray CLI is \$RAY (default .venv/bin/ray). Clients need RAY_AUTH_MODE=token;
the token is ~/.ray/auth_token (created by 'up' if missing). Submit with
  RAY_AUTH_MODE=token \$RAY job submit --address http://127.0.0.1:D --working-dir . -- python -m tune_app ...
A job's results (run directories, a local MLflow store) go to \$TUNE_APP_HOME,
default ~/tune_app, never into the job's temporary working directory.
EOF
}

die() {
    echo "cluster/local.sh: $*" >&2
    exit 2
}

is_count() { [[ $1 =~ ^[0-9]+$ ]]; }

# Loopback only: with this set, Ray picks 127.0.0.1 as the node address and binds there.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Ray 2.60 token authentication, the same on every node and client.
export RAY_AUTH_MODE=token

cmd=${1:-}
[[ -n $cmd ]] || { usage >&2; exit 2; }
shift
case $cmd in
    -h | --help | help) usage; exit 0 ;;
    up | down | status) ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
esac

while (($#)); do
    case $1 in
        --workers | --port | --dashboard-port | --head-cpus | --worker-cpus | --client-port)
            (($# >= 2)) || die "$1 needs a value"
            is_count "$2" || die "$1 needs a whole number, got '$2'"
            case $1 in
                --workers) WORKERS=$2 ;;
                --port) PORT=$2 ;;
                --dashboard-port) DASHBOARD_PORT=$2 ;;
                --head-cpus) HEAD_CPUS=$2 ;;
                --worker-cpus) WORKER_CPUS=$2 ;;
                --client-port) CLIENT_PORT=$2 ;;
            esac
            shift 2
            ;;
        --temp-dir)
            if (($# < 2)) || [[ -z $2 ]]; then die "--temp-dir needs a directory"; fi
            TEMP_DIR=$2
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

((PORT > 0 && PORT < 65536)) || die "--port must be 1-65535"
((DASHBOARD_PORT > 0 && DASHBOARD_PORT < 65536)) || die "--dashboard-port must be 1-65535"
((PORT != DASHBOARD_PORT)) || die "--port and --dashboard-port must differ"
((CLIENT_PORT > 0 && CLIENT_PORT < 65536)) || die "--client-port must be 1-65535"
((WORKER_CPUS > 0)) || die "--worker-cpus must be at least 1"
[[ -x $RAY ]] || command -v "$RAY" >/dev/null || die "Ray CLI '$RAY' not found (set RAY=...)"

# With --temp-dir, only the processes of that cluster (their command lines name
# its temp dir, or its GCS address for the Ray Client server); else `ray stop`.
down() {
    if [[ -z $TEMP_DIR ]]; then
        "$RAY" stop --force
        return
    fi
    local sig
    local -a pids
    for sig in TERM KILL; do
        mapfile -t pids < <(cluster_pids)
        ((${#pids[@]} == 0)) || kill -s "$sig" "${pids[@]}" 2>/dev/null || true
        [[ $sig == KILL ]] || sleep 3
    done
}

# Pids whose command line names the temp dir or the head's GCS address, except this
# script's own processes (their command line names the temp dir too).
cluster_pids() {
    local pid
    for pid in $(pgrep -f -- "$TEMP_DIR|=127\.0\.0\.1:$PORT( |$)"); do
        grep -q "local\.sh" "/proc/$pid/cmdline" 2>/dev/null || echo "$pid"
    done
}

up() {
    # Ray's processes inherit this PATH, and a job's entrypoint runs in a shell
    # under them: with the Ray CLI's folder (the venv's bin) first, `python` in
    # `ray job submit -- python -m tune_app ...` is the venv's interpreter.
    local bin
    bin=$(cd "$(dirname "$(command -v "$RAY")")" && pwd)
    export PATH="$bin:$PATH"
    # Every process of this cluster (and every job) finds it by this address, not
    # by guessing: with a second Ray on the machine, Ray's auto-discovery (used by
    # Ray Train's placement-group cleaner) fails with "multiple active Ray instances".
    export RAY_ADDRESS="127.0.0.1:$PORT"

    # `ray start` does not create a token; `ray get-auth-token --generate` writes
    # ~/.ray/auth_token once (it prints the token, which stays off the terminal).
    "$RAY" get-auth-token --generate >/dev/null

    # If any node fails to start, leave nothing half-started behind.
    trap 'echo "cluster/local.sh: up failed, stopping Ray" >&2; down >/dev/null 2>&1 || true' ERR

    "$RAY" start --head \
        --node-ip-address 127.0.0.1 \
        --port "$PORT" \
        --include-dashboard true \
        --dashboard-host 127.0.0.1 \
        --dashboard-port "$DASHBOARD_PORT" \
        --num-cpus "$HEAD_CPUS" \
        --num-gpus 0 \
        --resources '{"head_node": 1}' \
        --ray-client-server-port "$CLIENT_PORT" \
        --dashboard-agent-listen-port 0 \
        --disable-usage-stats \
        ${TEMP_DIR:+--temp-dir "$TEMP_DIR"}

    local i
    for ((i = 1; i <= WORKERS; i++)); do
        # `ray start --address` refuses to run while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
        # and with 1 it rewrites the head's 127.0.0.1 into this machine's network
        # address. So worker nodes get 1, and `ray start` runs with that rewrite
        # turned off; --node-ip-address pins the node itself to loopback.
        # Each node on this host needs its own dashboard-agent port (0 = any free one).
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 "$PY" -c "$LOOPBACK_RAY_START" start \
            --address "127.0.0.1:$PORT" \
            --node-ip-address 127.0.0.1 \
            --num-cpus "$WORKER_CPUS" \
            --num-gpus 0 \
            --resources "{\"worker_node\": 1, \"worker_$i\": 1}" \
            --dashboard-agent-listen-port 0 \
            --disable-usage-stats \
            ${TEMP_DIR:+--temp-dir "$TEMP_DIR"}
    done
    trap - ERR

    echo "Ray cluster up: head + $WORKERS worker node(s)"
    echo "  address:   127.0.0.1:$PORT"
    echo "  dashboard: http://127.0.0.1:$DASHBOARD_PORT"
}

case $cmd in
    up) up ;;
    status) "$RAY" status --address "127.0.0.1:$PORT" ;;
    down) down ;;
esac
