#!/usr/bin/env bash
# Request throughput of the release `kes` server against a static nginx mTLS reference and a
# Go reference (net/http + crypto/tls, upstream KES's stack, answering a fixed body),
# measured in the same run with the same load generator (examples/loadgen.rs), and the
# ratio of kes to each per case (issue 11).
#
#   bench/vs-nginx.sh                 # 3 rounds of 5 s per case, prints the median tables
#   ROUNDS=1 SECS=3 bench/vs-nginx.sh # quicker, noisier
#   SKIP_BUILD=1 bench/vs-nginx.sh    # use target/release/{kes,examples/loadgen} as they are
#   GO=0 bench/vs-nginx.sh            # no Go column
#   CASES_ONLY=fresh-16,decrypt-64 bench/vs-nginx.sh   # only these cases
#   LOADGEN_ARGS=--blocking bench/vs-nginx.sh  # the load generator's thread per connection
#
# Needs Linux, taskset (util-linux) and nginx; Go (Debian's golang-go, any version with
# Ed25519 certificates) for the Go column. When nginx or go is missing and we are root, it is
# installed from the distribution with `apt-get install -y`; go missing otherwise drops the
# Go column with a line saying so. The Go reference is built from bench/go-reference with
# GOPROXY=off and GOTOOLCHAIN=local: standard library only, nothing downloaded.
#
# All servers are pinned to CPU 0 and the load generator to CPU 1, so that the two never
# compete for one core. As root, the servers and the load generator also run at real-time
# priority (`chrt -f 10`; RT=0 turns it off): on a machine shared with other work, the
# scheduler otherwise gives one-process nginx a small slice of CPU 0 and our 16 threads
# a large one, and nginx looks 3-5x slower than it is. nginx runs one worker, with the same certificates (the server's
# and the client's, made by `kes identity new`), TLS 1.2 and 1.3, the same TLS 1.3 suites
# and groups as rustls offers, chosen in the server's order as ours are (AES-128-GCM first,
# Go's order), client certificates required, unlimited keep-alive, and
# answers `return 200` with a body as long as ours. The Go reference requires and verifies
# the client certificate, TLS 1.2 at least, Go's default suites and curves (as upstream
# configures it), keep-alive on, and answers the same body lengths; it does less per request
# than upstream KES (no policy, key store, crypto or JSON), so kes/go understates
# kes/upstream. `kes` runs as packaged: mlock on when
# root, the fs key store (keys are served from the in-memory cache after the first read),
# audit lines on stdout into a pipe that `cat` drains to /dev/null (as journald would take
# them) or `log.audit: off`.
#
# Cases: generate and decrypt at 16 and 64 keep-alive connections (audit off), the same at
# 16 with the audit log on, and a fresh mTLS handshake per request (no session resumption)
# from 16 clients. Within a case the servers take turns, kes, nginx, go, kes, nginx, go...,
# and each ratio is taken between the runs of one round, so a change of the machine's pace
# between cases moves both sides of a ratio. First table: requests per second, p99
# latency, server CPU time per request (utime+stime of the server's processes over the
# window), kes/nginx as the median of the per-round ratios with their range, and the same
# against go. Second table, per server: CPU per request, the kernel's share of it, context
# switches per request, how busy the server's core and the load generator's core were, and
# the load generator's own CPU per request, so a ratio capped by the load generator shows.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
RT=${RT:-1}
KES_PORT=${KES_PORT:-17373}
KES_AUDIT_PORT=${KES_AUDIT_PORT:-17374}
NGINX_PORT=${NGINX_PORT:-17443}
GO_PORT=${GO_PORT:-17444}
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
# The Go reference column (GO=0 leaves it out). Built from bench/go-reference with Go's
# standard library only: no module proxy, no toolchain download.
GO_BIN=""
if [[ ${GO:-1} == 1 ]]; then
    if ! command -v go >/dev/null && [[ $EUID -eq 0 ]]; then
        echo "vs-nginx: installing Debian's Go (apt-get install -y golang-go)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null || true
    fi
    if command -v go >/dev/null; then
        GO_BIN=$DIR/go-reference
        # Go keeps its build cache under $HOME; a user without a writable home gets one in $DIR.
        [[ -n ${GOCACHE:-} || -w ${HOME:-/nonexistent} ]] || export GOCACHE=$DIR/go-cache
        if ! (cd "$ROOT/bench/go-reference" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
            go build -o "$GO_BIN" .); then
            echo "vs-nginx: the Go reference does not build; no go column" >&2
            GO_BIN=""
        fi
    else
        echo "vs-nginx: go not found (apt-get install golang-go, or run as root); no go column"
    fi
fi

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
    # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of flags
    on_cpu 1 "$LOADGEN" --addr "127.0.0.1:$port" --ca server.crt --cert client.crt \
        --key client.key ${LOADGEN_ARGS:-} "$@"
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

# The Go reference (bench/go-reference: net/http and crypto/tls, upstream KES's stack, with
# nothing behind it), on CPU 0 like the others. Go's runtime reads the affinity mask, so
# it runs with GOMAXPROCS=1 as upstream would on that core.
GO_PID=""
if [[ -n $GO_BIN ]]; then
    "${PRIO[@]}" taskset -c 0 "$GO_BIN" -addr "127.0.0.1:$GO_PORT" -cert "$DIR/server.crt" \
        -key "$DIR/server.key" -client-ca "$DIR/client.crt" \
        -generate-len "$GEN_LEN" -decrypt-len "$DEC_LEN" 2>"go.err" &
    GO_PID=$!
    PIDS+=("$GO_PID")
    wait_up "$GO_PORT"
fi

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
if [[ -n ${CASES_ONLY:-} ]]; then
    kept=()
    for c in "${CASES[@]}"; do
        [[ " ${CASES_ONLY//,/ } " == *" ${c%%|*} "* ]] && kept+=("$c")
    done
    CASES=("${kept[@]}")
fi

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

SIDES=(ours ref)
[[ -n $GO_PID ]] && SIDES+=(go)
echo "kes $("$KES" --version 2>/dev/null | head -1) vs $(nginx -v 2>&1)${GO_PID:+ and $(go version | cut -d' ' -f3) net/http}; $(nproc) CPUs"
echo "start: $(uptime)"
# Time the hypervisor gave to other guests while ours wanted the CPU (steal, /proc/stat).
cpu_ticks() { awk '$1 == "cpu0" || $1 == "cpu1" { t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%s %s ", t, $9 }' /proc/stat; }
TICKS_START=$(cpu_ticks)
echo "rounds=$ROUNDS secs=$SECS warmup=$WARMUP; servers on CPU 0, load generator on CPU 1${PRIO[*]:+, ${PRIO[*]}}"
echo "each case runs its rounds back to back, kes then nginx${GO_PID:+ then go} in every round; a ratio is taken within one round"
RESULTS=$DIR/results
: >"$RESULTS"
for c in "${CASES[@]}"; do
    IFS='|' read -r name port pid args <<<"$c"
    read -r -a argv <<<"$args"
    for round in $(seq "$ROUNDS"); do
        out=()
        for side in "${SIDES[@]}"; do
            case $side in
            ours) line=$(load "$port" "${argv[@]}" --secs "$SECS" --warmup "$WARMUP" --pid "$pid") ;;
            ref) line=$(load "$NGINX_PORT" "${argv[@]}" --secs "$SECS" --warmup "$WARMUP" "${nginx_pid_args[@]}") ;;
            go) line=$(load "$GO_PORT" "${argv[@]}" --secs "$SECS" --warmup "$WARMUP" --pid "$GO_PID") ;;
            esac
            printf '%s %s %s' "$round" "$name" "$side" >>"$RESULTS"
            for f in rps p50_us p99_us cpu_us errors srv_util srv_sys srv_cs lg_cpu_us lg_util lg_cs; do
                printf ' %s' "$(field "$f" "$line")" >>"$RESULTS"
            done
            echo >>"$RESULTS"
            out+=("$line")
        done
        printf 'round %s %-18s kes %s | nginx %s%s\n' "$round" "$name" "${out[0]}" "${out[1]}" \
            "${out[2]:+ | go ${out[2]}}"
    done
done

# Columns of $RESULTS: 1 round, 2 case, 3 side, 4 rps, 5 p50, 6 p99, 7 server CPU µs/req,
# 8 errors, 9 server CPU share of its core, 10 kernel share of the server's CPU,
# 11 server context switches/req, 12 loadgen CPU µs/req, 13 loadgen CPU share, 14 loadgen
# context switches/req.
# shellcheck disable=SC2016 # awk's own \$fields
AWK_LIB='
    function median(a, n,   i, j, t) {
        if (n == 0) return 0
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function lo(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
    function hi(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
    # Ratio of side a to side b per round, in r[1..k]; returns k.
    function ratios(a, b, r,   i, k) {
        k = 0
        for (i = 1; i <= rounds; i++) if (((a, i) in rps) && rps[b, i] > 0) { k++; r[k] = rps[a, i] / rps[b, i] }
        return k
    }
    function col(side, c, v,   i, n) {
        n = 0
        for (i = 1; i <= rounds; i++) if ((side, i) in rps) { n++; v[n] = val[side, i, c] }
        return n
    }
    $2 == name { rps[$3, $1] = $4; for (c = 4; c <= NF; c++) val[$3, $1, c] = $c }
'

echo
printf '%-18s %10s %10s %7s %12s %12s %14s %14s %11s %9s %7s %11s %9s %9s\n' case "kes req/s" "nginx req/s" ratio \
    "kes p99 µs" "nginx p99 µs" "kes CPU µs/req" "nginx CPU µs/req" "ratio range" "go req/s" "kes/go" \
    "kes/go range" "cpu nginx" "cpu go"
for c in "${CASES[@]}"; do
    name=${c%%|*}
    awk -v name="$name" -v rounds="$ROUNDS" "$AWK_LIB"'
        END {
            k = ratios("ours", "ref", r)
            g = ratios("ours", "go", rg)
            kc = median(v5, col("ours", 7, v5))
            printf "%-18s %10.0f %10.0f %7.2f %12.0f %12.0f %14.1f %14.1f %11s", name,
                median(v1, col("ours", 4, v1)), median(v2, col("ref", 4, v2)), median(r, k),
                median(v3, col("ours", 6, v3)), median(v4, col("ref", 6, v4)),
                kc, median(v6, col("ref", 7, v6)),
                sprintf("%.2f-%.2f", lo(r, k), hi(r, k))
            if (g > 0)
                printf " %9.0f %7.2f %11s", median(v7, col("go", 4, v7)), median(rg, g), sprintf("%.2f-%.2f", lo(rg, g), hi(rg, g))
            else
                printf " %9s %7s %11s", "-", "-", "-"
            # What a request costs the reference over what it costs kes: the ratio the two
            # would reach if both were held back by their own CPU alone.
            printf(" %9.2f", (kc > 0) ? median(v6, col("ref", 7, v6)) / kc : 0)
            if (g > 0) printf(" %9.2f", (kc > 0) ? median(v8, col("go", 7, v8)) / kc : 0)
            else printf(" %9s", "-")
            printf "\n"
        }' "$RESULTS"
done
echo "(medians over $ROUNDS rounds; ratio = median of the per-round kes/nginx throughput ratios, range = their min-max;"
echo " kes/go likewise: the Go reference does less per request than upstream KES, so kes/go understates kes/upstream;"
echo " cpu nginx, cpu go = the reference's server CPU per request / kes's: the ratio if only the servers' CPU limited"
echo " both, which a saturated load generator (see 'limit' below) does not cap)"

echo
echo "What each request cost (medians over the rounds): server CPU per request, the kernel's share of"
echo "it, the server's context switches per request, how busy the server's core was, and the load"
echo "generator's CPU per request and how busy its core was. 'limit' names a core at least 90% busy:"
echo "where it is the load generator's, the ratio measures the load generator as much as the server."
printf '%-18s %-6s %10s %9s %7s %8s %9s %12s %9s %8s %-9s\n' case side "req/s" "CPU µs/req" kernel \
    "cs/req" "srv busy" "lg CPU µs/req" "lg busy" "lg cs/req" limit
for c in "${CASES[@]}"; do
    name=${c%%|*}
    for side in "${SIDES[@]}"; do
        label=$side
        [[ $side == ours ]] && label=kes
        [[ $side == ref ]] && label=nginx
        awk -v name="$name" -v rounds="$ROUNDS" -v side="$side" -v label="$label" "$AWK_LIB"'
            END {
                n = col(side, 4, x1)
                if (n == 0) exit
                sb = median(x2, col(side, 9, x2)); lb = median(x3, col(side, 13, x3))
                limit = (lb >= 0.9 && sb >= 0.9) ? "both" : (lb >= 0.9) ? "loadgen" : (sb >= 0.9) ? "server" : "neither"
                printf "%-18s %-6s %10.0f %9.1f %6.0f%% %8.2f %8.0f%% %12.1f %8.0f%% %8.2f %-9s\n", name, label,
                    median(x1, n), median(x4, col(side, 7, x4)), 100 * median(x5, col(side, 10, x5)),
                    median(x6, col(side, 11, x6)), 100 * sb, median(x7, col(side, 12, x7)), 100 * lb,
                    median(x8, col(side, 14, x8)), limit
            }' "$RESULTS"
    done
done
echo "(server context switches are summed over the threads alive at both ends of a window: a thread that"
echo " ended inside it is not counted, so for kes's fresh connections it is a lower bound)"
read -r t0a s0a t1a s1a <<<"$TICKS_START"
read -r t0b s0b t1b s1b <<<"$(cpu_ticks)"
awk -v t0="$((t0b - t0a))" -v s0="$((s0b - s0a))" -v t1="$((t1b - t1a))" -v s1="$((s1b - s1a))" 'BEGIN {
    printf "steal over the run (the hypervisor ran others on our cores): CPU 0 %.1f%%, CPU 1 %.1f%%\n",
        t0 ? 100 * s0 / t0 : 0, t1 ? 100 * s1 / t1 : 0 }'
echo "end: $(uptime)"
