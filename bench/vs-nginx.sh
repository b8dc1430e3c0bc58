#!/usr/bin/env bash
# Request throughput of the release `kes` server against a static nginx mTLS reference,
# measured in the same run with the same load generator (examples/loadgen.rs), and the
# ratio of the two per case (issue 11).
#
#   bench/vs-nginx.sh                 # 3 rounds of 5 s per case, prints the median table
#   ROUNDS=1 SECS=3 bench/vs-nginx.sh # quicker, noisier
#   SKIP_BUILD=1 bench/vs-nginx.sh    # use target/release/{kes,examples/loadgen} as they are
#
# Needs Linux, taskset (util-linux) and nginx. When nginx is missing and we are root, it is
# installed from the distribution with `apt-get update && apt-get install -y nginx`.
#
# Both servers are pinned to CPU 0 and the load generator to CPU 1, so that the two never
# compete for one core. As root, both servers and the load generator also run at real-time
# priority (`chrt -f 10`; RT=0 turns it off): on a machine shared with other work, the
# scheduler otherwise gives one-process nginx a small slice of CPU 0 and our 16 threads
# a large one, and nginx looks 3-5x slower than it is. nginx runs one worker, with the same certificates (the server's
# and the client's, made by `kes identity new`), TLS 1.2 and 1.3, the same TLS 1.3 suites
# and groups as rustls offers, chosen in the server's order as ours are (AES-128-GCM first,
# Go's order), client certificates required, unlimited keep-alive, and
# answers `return 200` with a body as long as ours. `kes` runs as packaged: mlock on when
# root, the fs key store (keys are served from the in-memory cache after the first read),
# audit lines on stdout into a pipe that `cat` drains to /dev/null (as journald would take
# them) or `log.audit: off`.
#
# Cases: generate and decrypt at 16 and 64 keep-alive connections (audit off), the same at
# 16 with the audit log on, and a fresh mTLS handshake per request (no session resumption)
# from 16 clients. Each line: requests per second, p50/p99 latency, server CPU time per
# request (utime+stime of the server's processes over the window), and ours/nginx.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
RT=${RT:-1}
KES_PORT=${KES_PORT:-17373}
KES_AUDIT_PORT=${KES_AUDIT_PORT:-17374}
NGINX_PORT=${NGINX_PORT:-17443}
KES=${KES:-$ROOT/target/release/kes}
LOADGEN=${LOADGEN:-$ROOT/target/release/examples/loadgen}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --locked --bin kes --example loadgen)
fi
for tool in taskset "$KES" "$LOADGEN"; do
    command -v "$tool" >/dev/null || { echo "vs-nginx: $tool not found" >&2; exit 1; }
done
if ! command -v nginx >/dev/null; then
    if [[ $EUID -ne 0 ]]; then
        echo "vs-nginx: nginx is missing; install it (apt-get install nginx) or run as root" >&2
        exit 1
    fi
    echo "vs-nginx: installing Debian's nginx (apt-get update && apt-get install -y nginx)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

# CPU 0 for servers, CPU 1 for the load generator, real-time priority when allowed.
PRIO=()
if [[ $RT == 1 && $EUID -eq 0 ]] && command -v chrt >/dev/null; then PRIO=(chrt -f 10); fi
on_cpu() { # cpu command...
    local cpu=$1
    shift
    "${PRIO[@]}" taskset -c "$cpu" "$@"
}

DIR=$(mktemp -d /tmp/kes-vs-nginx.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$DIR"
"$KES" identity new --key server.key --cert server.crt --ip 127.0.0.1 --dns localhost localhost >/dev/null
"$KES" identity new --key client.key --cert client.crt bench >/dev/null
ADMIN=$("$KES" identity of client.crt)

start_kes() { # port audit(on|off) -> pid in KES_PID
    cat >"config-$1.yml" <<YAML
address: 127.0.0.1:$1
admin:
  identity: $ADMIN
tls:
  key: $DIR/server.key
  cert: $DIR/server.crt
log:
  audit: $2
keystore:
  fs:
    path: $DIR/keys
YAML
    # Not through on_cpu: $! must be the server itself (chrt and taskset exec it).
    "${PRIO[@]}" taskset -c 0 "$KES" server --config "config-$1.yml" \
        > >(on_cpu 0 cat >/dev/null) 2>"kes-$1.err" &
    KES_PID=$!
    PIDS+=("$KES_PID")
}

load() { # port extra-args... (runs on CPU 1)
    local port=$1
    shift
    on_cpu 1 "$LOADGEN" --addr "127.0.0.1:$port" --ca server.crt --cert client.crt \
        --key client.key "$@"
}

wait_up() { # port
    for _ in $(seq 100); do
        load "$1" --once --path /version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "vs-nginx: nothing answers on port $1" >&2
    cat ./*.err >&2 || true
    exit 1
}

start_kes "$KES_PORT" off
KES_OFF=$KES_PID
start_kes "$KES_AUDIT_PORT" on
KES_ON=$KES_PID
wait_up "$KES_PORT"
wait_up "$KES_AUDIT_PORT"

CTX=eyJteS1idWNrZXQiOiJteS1idWNrZXQvbXkvb2JqZWN0In0=
GEN_BODY="{\"context\":\"$CTX\"}"
load "$KES_PORT" --once --method POST --path /v1/key/create/bench >/dev/null
GEN=$(load "$KES_PORT" --once --path /v1/key/generate/bench --body "$GEN_BODY")
CT=$(sed -n 's/.*"ciphertext":"\([^"]*\)".*/\1/p' <<<"$GEN")
DEC_BODY="{\"ciphertext\":\"$CT\",\"context\":\"$CTX\"}"
DEC=$(load "$KES_PORT" --once --path /v1/key/decrypt/bench --body "$DEC_BODY")
# Bodies of the same length for nginx ("200 " prefix removed).
GEN_LEN=$((${#GEN} - 4))
DEC_LEN=$((${#DEC} - 4))
filler() { head -c "$1" /dev/zero | tr '\0' 'a'; }

USER_LINE=""
if [[ $EUID -eq 0 ]]; then USER_LINE="user root;"; fi
cat >nginx.conf <<NGINX
daemon off;
worker_processes 1;
$USER_LINE
pid $DIR/nginx.pid;
error_log $DIR/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 90s;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $DIR/server.crt;
        ssl_certificate_key $DIR/server.key;
        ssl_client_certificate $DIR/client.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        default_type application/json;
        location /v1/key/generate/ { return 200 '$(filler "$GEN_LEN")'; }
        location /v1/key/decrypt/ { return 200 '$(filler "$DEC_LEN")'; }
        location / { return 200 'ok'; }
    }
}
NGINX
"${PRIO[@]}" taskset -c 0 nginx -c "$DIR/nginx.conf" -p "$DIR" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_up "$NGINX_PORT"
NGINX_PIDS=("$NGINX_PID")
read -r -a children <"/proc/$NGINX_PID/task/$NGINX_PID/children" || true
NGINX_PIDS+=("${children[@]}")
nginx_pid_args=()
for p in "${NGINX_PIDS[@]}"; do nginx_pid_args+=(--pid "$p"); done

# name  kes-port  kes-pid  loadgen-args
CASES=(
    "generate-16|$KES_PORT|$KES_OFF|--conns 16 --path /v1/key/generate/bench --body $GEN_BODY"
    "generate-64|$KES_PORT|$KES_OFF|--conns 64 --path /v1/key/generate/bench --body $GEN_BODY"
    "decrypt-16|$KES_PORT|$KES_OFF|--conns 16 --path /v1/key/decrypt/bench --body $DEC_BODY"
    "decrypt-64|$KES_PORT|$KES_OFF|--conns 64 --path /v1/key/decrypt/bench --body $DEC_BODY"
    "generate-16-audit|$KES_AUDIT_PORT|$KES_ON|--conns 16 --path /v1/key/generate/bench --body $GEN_BODY"
    "decrypt-16-audit|$KES_AUDIT_PORT|$KES_ON|--conns 16 --path /v1/key/decrypt/bench --body $DEC_BODY"
    "fresh-16|$KES_PORT|$KES_OFF|--conns 16 --fresh --path /v1/key/generate/bench --body $GEN_BODY"
)

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

echo "kes $("$KES" --version 2>/dev/null | head -1) vs $(nginx -v 2>&1); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rounds=$ROUNDS secs=$SECS warmup=$WARMUP; servers on CPU 0, load generator on CPU 1${PRIO[*]:+, ${PRIO[*]}}"
RESULTS=$DIR/results
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for c in "${CASES[@]}"; do
        IFS='|' read -r name port pid args <<<"$c"
        read -r -a argv <<<"$args"
        ours=$(load "$port" "${argv[@]}" --secs "$SECS" --warmup "$WARMUP" --pid "$pid")
        ref=$(load "$NGINX_PORT" "${argv[@]}" --secs "$SECS" --warmup "$WARMUP" "${nginx_pid_args[@]}")
        for side in ours ref; do
            line=${!side}
            printf '%s %s %s %s %s %s %s %s\n' "$round" "$name" "$side" \
                "$(field rps "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" \
                "$(field cpu_us "$line")" "$(field errors "$line")" >>"$RESULTS"
        done
        printf 'round %s %-18s kes %s | nginx %s\n' "$round" "$name" "$ours" "$ref"
    done
done

echo
printf '%-18s %10s %10s %7s %12s %12s %14s %14s\n' case "kes req/s" "nginx req/s" ratio \
    "kes p99 µs" "nginx p99 µs" "kes CPU µs/req" "nginx CPU µs/req"
for c in "${CASES[@]}"; do
    name=${c%%|*}
    awk -v name="$name" '
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $2 == name && $3 == "ours" { n++; r[$1] = $4; p[n] = $6; c[n] = $7; or[n] = $4 }
        $2 == name && $3 == "ref" { m++; q[$1] = $4; rp[m] = $6; rc[m] = $7; nr[m] = $4 }
        END {
            k = 0
            for (i in r) if (q[i] > 0) { k++; ratio[k] = r[i] / q[i] }
            printf "%-18s %10.0f %10.0f %7.2f %12.0f %12.0f %14.1f %14.1f\n", name,
                median(or, n), median(nr, m), median(ratio, k), median(p, n), median(rp, m),
                median(c, n), median(rc, m)
        }' "$RESULTS"
done
echo "(medians over $ROUNDS rounds; ratio = median of the per-round kes/nginx throughput ratios)"
