#!/usr/bin/env bash
# The side-by-side load harness: fleetgate against a bare hyper forwarder, nginx and
# HAProxy in front of one nginx upstream, all on 127.0.0.1. See docs/performance.md.
#
#   benches/load/run.sh            full run (3 interleaved repetitions, 10 s each)
#   benches/load/run.sh --quick    1 repetition, 5 s each
#   benches/load/run.sh --smoke    CI-sized: fleetgate only, in front of tiny_upstream, curl
#
# Environment: LOAD_SECS (length of one throughput run), LOAD_REPS (repetitions),
# LOAD_IDLE_CONNS (workload 4, default 10000), LOAD_STREAM_MIB (workload 5's transfer
# size, default 1024), LOAD_PORT_BASE (default 19100; fifteen ports from it are used,
# BASE to BASE+14), LOAD_KEEP=1 keeps the scratch directory (configs, logs).
#
# It installs nothing. Missing tools are named with their Debian package, and the paths
# or workloads that need them are skipped with a note.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=full
for arg in "$@"; do
    case "$arg" in
        --quick) MODE=quick ;;
        --smoke) MODE=smoke ;;
        -h | --help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument $arg (expected --quick, --smoke)" >&2
            exit 2
            ;;
    esac
done

if [[ $MODE == full ]]; then
    SECS=${LOAD_SECS:-10}
    REPS=${LOAD_REPS:-3}
else
    SECS=${LOAD_SECS:-5}
    REPS=${LOAD_REPS:-1}
fi
IDLE_CONNS=${LOAD_IDLE_CONNS:-10000}
BASE=${LOAD_PORT_BASE:-19100}
P_UP=$BASE            # the nginx upstream (tiny_upstream in --smoke)
P_FG=$((BASE + 1))    # fleetgate, access log off
P_FG_ADMIN=$((BASE + 2))
P_FGL=$((BASE + 3))   # fleetgate, access log on
P_FGL_ADMIN=$((BASE + 4))
P_NGX=$((BASE + 5))   # nginx proxy
P_HAP=$((BASE + 6))   # HAProxy
P_BARE=$((BASE + 7))  # bare hyper forwarder
P_NGX_H2=$((BASE + 8)) # nginx proxy, h2c (prior knowledge) listener
P_SINK=$((BASE + 9))   # tiny_upstream: the upstream of workload 5's uploads
P_FG_TLS=$((BASE + 10)) # fleetgate with [tls] (workload 6)
P_FG_TLS_ADMIN=$((BASE + 11))
P_NGX_TLS=$((BASE + 12)) # nginx proxy, listen ... ssl (workload 6)
P_HAP_TLS=$((BASE + 13)) # HAProxy, bind ... ssl (workload 6)
P_BARE_PC=$((BASE + 14)) # bare hyper forwarder, one current-thread runtime per core
# A fleet-ok GET of the shipped manifest (routes/40-fleet.toml).
TARGET_PATH=/api/acme/threads
# Workload 5. The download: a GET under /api/{ws}/threads/{*rest}, fleet-ok. The upload:
# a POST to /api/{ws}/threads, fleet-ok with writes = "fleet", so role serve's guard lets
# the write go to the fleet (a write on a rule without it would be sent to the ide).
STREAM_PATH=/api/acme/threads/stream
UPLOAD_PATH=/api/acme/threads
STREAM_MIB=${LOAD_STREAM_MIB:-1024}
[[ $STREAM_MIB =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: LOAD_STREAM_MIB must be a whole number of MiB" >&2; exit 2; }
STREAM_BYTES=$((STREAM_MIB * 1048576))
HZ=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

note() { printf 'load: %s\n' "$*" >&2; }
die() {
    note "error: $*"
    exit 1
}

WORK=$(mktemp -d /tmp/fleetgate-load.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each a moment, then make sure.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${LOAD_KEEP:-0} == 1 ]]; then
        note "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

have() { command -v "$1" >/dev/null 2>&1; }

# Waits until 127.0.0.1:PORT accepts connections (bash's /dev/tcp), or fails.
wait_port() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port in 10 s (see $WORK/$name.log)"
}

# Starts a command in the background with its output in $WORK/NAME.log; sets LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Cargo's target directory (CARGO_TARGET_DIR is honoured, as cargo does).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLEETGATE=$TARGET_DIR/release/fleetgate
BARE=$TARGET_DIR/release/examples/bare_forwarder
TINY=$TARGET_DIR/release/examples/tiny_upstream

build() {
    if have cargo; then
        # Two invocations: examples turn on the dev-dependencies' features (tokio's
        # test-util), and in one invocation with them the fleetgate binary would be built
        # with those too. Built alone, it is the binary `cargo build --release` ships.
        note "building: cargo build --release --bin fleetgate; cargo build --release --example $*"
        local args=(--release)
        local ex
        for ex in "$@"; do args+=(--example "$ex"); done
        (cd "$ROOT" && cargo build --locked --quiet --release --bin fleetgate \
            && cargo build --locked --quiet "${args[@]}") || die "cargo build failed"
    fi
    [[ -x $FLEETGATE ]] || die "$FLEETGATE is missing: cargo build --release --bin fleetgate"
}

# fleetgate's configuration: role serve, the shipped routes/, one fleet upstream,
# admission on but never shedding, the guard at its defaults. Its log (stderr) goes to
# a file in the scratch directory. UPSTREAM is the upstream's port (default: the nginx
# upstream). OPTS, for workloads 5 and 6, whose processes are started afresh many times:
# "restart" (no drain_delay at SIGTERM: nothing is behind a load balancer here) and
# "tls" (the [tls] section with the harness's certificate).
fleetgate_config() {
    local file=$1 listen=$2 admin=$3 access_log=$4 upstream=${5:-$P_UP} opts=${6:-}
    local drain="" tls=""
    if [[ $opts == *restart* ]]; then
        drain="drain_delay = 0"
    fi
    if [[ $opts == *tls* ]]; then
        tls="[tls]
cert = \"$WORK/tls/cert.pem\"
key = \"$WORK/tls/key.pem\""
    fi
    cat >"$file" <<EOF
node_id = "load"
role = "serve"
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
routes = "$ROOT/routes"
# info: the level the access log is written at; JSON, as a deployment would log.
log_level = "info"
log_format = "json"
access_log = $access_log

[upstreams]
fleet = ["http://127.0.0.1:$upstream"]

[timeouts]
# The client keep-alive idle timeout, like nginx's keepalive_timeout below.
header_read = 120000
$drain

[admission]
max_inflight = 100000

# The default mode (one current-thread runtime per worker), two workers like the others.
[runtime]
mode = "per-core"
workers = 2
$tls
EOF
}

start_fleetgate() {
    local name=$1 listen=$2 admin=$3 access_log=$4 upstream=${5:-$P_UP} opts=${6:-}
    fleetgate_config "$WORK/$name.toml" "$listen" "$admin" "$access_log" "$upstream" "$opts"
    start "$name" "$FLEETGATE" serve --config "$WORK/$name.toml"
    wait_port "$listen" "$name"
}

# ---------------------------------------------------------------------------------------
# --smoke: fleetgate in front of tiny_upstream, a handful of curl requests.

if [[ $MODE == smoke ]]; then
    have curl || die "curl is missing (Debian package: curl)"
    build tiny_upstream
    [[ -x $TINY ]] || die "$TINY is missing: cargo build --release --examples"
    start upstream "$TINY" "127.0.0.1:$P_UP"
    wait_port "$P_UP" upstream
    start_fleetgate fleetgate "$P_FG" "$P_FG_ADMIN" false
    ok=0
    for i in 1 2 3 4 5; do
        head=$(curl -s -o "$WORK/body" -D - --max-time 5 "http://127.0.0.1:$P_FG$TARGET_PATH?i=$i" | tr -d '\r') || true
        size=$(wc -c <"$WORK/body" 2>/dev/null || echo 0)
        if [[ $head == "HTTP/1.1 200"* ]] && grep -qi '^x-fleetgate-target: fleet$' <<<"$head" && [[ $size == 1024 ]]; then
            ok=$((ok + 1))
        else
            note "request $i: unexpected answer (body $size bytes):"
            printf '%s\n' "$head" >&2
        fi
    done
    # h2c with prior knowledge, when curl has HTTP/2.
    if curl -V | grep -q HTTP2; then
        head=$(curl -s -o /dev/null -D - --http2-prior-knowledge --max-time 5 "http://127.0.0.1:$P_FG$TARGET_PATH" | tr -d '\r') || true
        if [[ $head == "HTTP/2 200"* ]] && grep -qi '^x-fleetgate-target: fleet$' <<<"$head"; then
            ok=$((ok + 1))
        else
            note "h2c request: unexpected answer:"
            printf '%s\n' "$head" >&2
            ok=-100
        fi
    fi
    if ((ok >= 5)); then
        echo "load smoke: ok ($ok requests answered 200 with x-fleetgate-target: fleet)"
        exit 0
    fi
    echo "load smoke: FAILED (see above; logs in $WORK)" >&2
    LOAD_KEEP=1
    exit 1
fi

# ---------------------------------------------------------------------------------------
# Tools

missing_pkgs=()
have nginx || missing_pkgs+=(nginx)
have wrk || missing_pkgs+=(wrk)
have curl || missing_pkgs+=(curl)
have haproxy || missing_pkgs+=(haproxy)
have python3 || missing_pkgs+=(python3)
have openssl || missing_pkgs+=(openssl)
if ((${#missing_pkgs[@]})); then
    note "missing: ${missing_pkgs[*]} (install: apt-get install -y nginx haproxy wrk curl openssl nghttp2-client linux-perf python3)"
fi
have nginx || die "nginx is the upstream of every path; install the Debian package nginx"
have wrk || die "wrk drives workload 1; install the Debian package wrk"
have curl || die "curl checks every path and drives workload 5; install the Debian package curl"
have haproxy || note "skipping the HAProxy path (Debian package haproxy)"
have python3 || note "skipping workload 4, idle connections (Debian package python3)"
OHA=$(command -v oha || true)
[[ -z $OHA && -x ${CARGO_HOME:-$HOME/.cargo}/bin/oha ]] && OHA=${CARGO_HOME:-$HOME/.cargo}/bin/oha
[[ -n $OHA ]] || note "skipping workload 2, latency at a fixed rate (oha: cargo install oha; wrk2 is not in Debian)"
have h2load || note "skipping workload 3, h2c (h2load: Debian package nghttp2-client)"
have openssl || note "skipping workload 6, TLS (openssl: Debian package openssl)"

build bare_forwarder tiny_upstream
[[ -x $BARE ]] || die "$BARE is missing: cargo build --release --example bare_forwarder"
[[ -x $TINY ]] || die "$TINY is missing: cargo build --release --example tiny_upstream"

# Idle connections need file descriptors: 10,000 in the client, as many again in each proxy.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || ((hard >= 65536)); then ulimit -n 65536; else ulimit -n "$hard"; fi
if (($(ulimit -n) < IDLE_CONNS + 1000)); then
    IDLE_CONNS=$(($(ulimit -n) - 1000))
    note "ulimit -n is $(ulimit -n): workload 4 uses $IDLE_CONNS connections"
fi
NOFILE=$(ulimit -n)

# nginx runs as root when we are root, so its workers can read the scratch directory.
NGINX_USER=""
[[ $EUID == 0 ]] && NGINX_USER="user root;"
nginx_common() {
    local name=$1
    cat <<EOF
$NGINX_USER
pid $WORK/$name.pid;
error_log $WORK/$name.error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $NOFILE; }
EOF
}
nginx_http_common() {
    local name=$1
    cat <<EOF
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/$name.body;
    proxy_temp_path $WORK/$name.proxy;
    fastcgi_temp_path $WORK/$name.fastcgi;
    uwsgi_temp_path $WORK/$name.uwsgi;
    scgi_temp_path $WORK/$name.scgi;
EOF
}

BODY_1K=$(head -c 1024 /dev/zero | tr '\0' 'x')
# Workload 5's payload: a sparse file (no disk written), the download's file and the
# upload's body.
truncate -s "$STREAM_BYTES" "$WORK/stream.bin"
{
    echo "worker_processes 1;"
    nginx_common upstream
    echo "http {"
    nginx_http_common upstream
    cat <<EOF
    default_type text/plain;
    server {
        listen 127.0.0.1:$P_UP reuseport;
        location / { return 200 "$BODY_1K"; }
        # Workload 5's download, from the page cache with sendfile(2).
        location = $STREAM_PATH {
            sendfile on;
            alias $WORK/stream.bin;
            default_type application/octet-stream;
        }
    }
}
EOF
} >"$WORK/upstream.conf"

# nginx as the proxy: NAME (pid, logs and temp paths), the upstream's port, and the first
# lines of its server block (where it listens; for TLS, the ssl_ settings too).
nginx_proxy_config() {
    local name=$1 upstream=$2 listen=$3
    echo "worker_processes 2;"
    nginx_common "$name"
    echo "http {"
    nginx_http_common "$name"
    cat <<EOF
    upstream fleet {
        server 127.0.0.1:$upstream;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
$listen
        location / {
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Bodies stream both ways and never touch the disk (workload 5; no effect on
            # the bodiless 1 KiB requests of the others): no body size limit, the
            # request body is not spooled before it is sent on, and the response is
            # buffered in memory only (proxy_buffers) instead of in a temporary file.
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
}
nginx_proxy_config nginx "$P_UP" "        listen 127.0.0.1:$P_NGX;
        # nginx 1.22 serves h2c (prior knowledge) only on a listener of its own.
        listen 127.0.0.1:$P_NGX_H2 http2;" >"$WORK/nginx.conf"

# HAProxy: the upstream's port and the frontend's bind line. It streams bodies as they
# come (no option http-buffer-request) and has no body size limit.
haproxy_config() {
    local upstream=$1 bind=$2
    cat <<EOF
global
    nbthread 2
    # Room for the idle connections of workload 4. HAProxy wants 2 descriptors per
    # connection and refuses to start when it cannot get them; an idle client
    # connection needs one, so let it run under a lower ulimit -n.
    no strict-limits
    maxconn $((IDLE_CONNS + 500))
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 3s
    timeout client 120s
    timeout server 60s
    timeout http-keep-alive 120s
frontend fe
    bind $bind
    default_backend fleet
backend fleet
    server up 127.0.0.1:$upstream
EOF
}
haproxy_config "$P_UP" "127.0.0.1:$P_HAP" >"$WORK/haproxy.cfg"

# ---------------------------------------------------------------------------------------
# The processes. PROC_PIDS[path] lists the pids whose CPU and memory count for the path.

declare -A PORT PORT_H2 PROC_PIDS
PATHS=()

start upstream nginx -p "$WORK" -c "$WORK/upstream.conf" -g 'daemon off;'
UPSTREAM_PID=$LAST_PID
wait_port "$P_UP" upstream
curl -sf -o /dev/null "http://127.0.0.1:$P_UP/" || die "the nginx upstream does not answer"

# Children of a process (nginx's workers), space-separated.
children() { pgrep -P "$1" | tr '\n' ' '; }

start_all() {
    PATHS=(direct)
    PORT[direct]=$P_UP
    PROC_PIDS[direct]=$(children "$UPSTREAM_PID")

    start_fleetgate fleetgate "$P_FG" "$P_FG_ADMIN" false
    PATHS+=(fleetgate)
    PORT[fleetgate]=$P_FG
    PROC_PIDS[fleetgate]=$LAST_PID

    start_fleetgate fleetgate_log "$P_FGL" "$P_FGL_ADMIN" true
    PATHS+=(fleetgate_log)
    PORT[fleetgate_log]=$P_FGL
    PROC_PIDS[fleetgate_log]=$LAST_PID

    start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
    local master=$LAST_PID
    wait_port "$P_NGX" nginx
    PATHS+=(nginx)
    PORT[nginx]=$P_NGX
    PORT_H2[nginx]=$P_NGX_H2
    PROC_PIDS[nginx]="$master $(children "$master")"

    if have haproxy; then
        start haproxy haproxy -db -f "$WORK/haproxy.cfg"
        PROC_PIDS[haproxy]=$LAST_PID
        wait_port "$P_HAP" haproxy
        PATHS+=(haproxy)
        PORT[haproxy]=$P_HAP
    fi

    start bare env TOKIO_WORKER_THREADS=2 "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_UP"
    PROC_PIDS[bare]=$LAST_PID
    wait_port "$P_BARE" bare
    PATHS+=(bare)
    PORT[bare]=$P_BARE

    # The same forwarder the way fleetgate runs by default (runtime.mode = "per-core").
    start bare_pc env BARE_PER_CORE=2 "$BARE" "127.0.0.1:$P_BARE_PC" "127.0.0.1:$P_UP"
    PROC_PIDS[bare_pc]=$LAST_PID
    wait_port "$P_BARE_PC" bare_pc
    PATHS+=(bare_pc)
    PORT[bare_pc]=$P_BARE_PC

    local p
    for p in "${PATHS[@]}"; do
        curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:${PORT[$p]}$TARGET_PATH" ||
            die "path $p does not answer 200 on $TARGET_PATH (logs in $WORK)"
    done
    # The access log must really be on in the one run and off in the other.
    sleep 0.5
    grep -q '"message":"access"' "$WORK/fleetgate_log.log" ||
        die "fleetgate_log wrote no access line (see $WORK/fleetgate_log.log)"
    if grep -q '"message":"access"' "$WORK/fleetgate.log"; then
        die "fleetgate (access_log = false) wrote an access line"
    fi
}

SINK_PID=""
stop_all() {
    # Everything but the upstreams, which stay for the whole run.
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        if [[ $pid == "$UPSTREAM_PID" || $pid == "$SINK_PID" ]]; then
            keep+=("$pid")
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=("${keep[@]}")
}

# utime+stime of the pids (all threads), in clock ticks.
cpu_ticks() {
    local total=0 pid f fields
    for pid in "$@"; do
        # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        read -ra fields <<<"$f"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# VmRSS (or, with FIELD=VmHWM, the peak RSS since the process started) of the pids,
# summed, in KiB.
rss_kib() {
    local total=0 pid v field=${FIELD:-VmRSS}
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# The same for one path's processes (PROC_PIDS holds a space-separated list).
path_cpu() {
    local pids
    read -ra pids <<<"${PROC_PIDS[$1]}"
    cpu_ticks "${pids[@]}"
}
path_rss() {
    local pids
    read -ra pids <<<"${PROC_PIDS[$1]}"
    rss_kib "${pids[@]}"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# wrk's latency figure (e.g. 312.00us, 1.20ms) in microseconds.
to_us() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print "nan" }'; }

# ---------------------------------------------------------------------------------------
# Workload 4: idle keep-alive connections (fresh processes, before any load).

declare -A RSS_IDLE RSS_CONNS RSS_PEAK HELD
if have python3; then
    start_all
    note "workload 4: $IDLE_CONNS idle keep-alive connections per path"
    for p in "${PATHS[@]}"; do
        [[ $p == direct || $p == fleetgate_log ]] && continue
        sleep 1
        RSS_IDLE[$p]=$(path_rss "$p")
        rm -f "$WORK/ready"
        python3 "$ROOT/benches/load/idle_conns.py" 127.0.0.1 "${PORT[$p]}" "$TARGET_PATH" \
            -n "$IDLE_CONNS" --ready-file "$WORK/ready" --hold 120 >"$WORK/idle-$p.log" 2>&1 &
        client=$!
        PIDS+=("$client")
        for _ in $(seq 900); do
            [[ -s $WORK/ready ]] && break
            kill -0 "$client" 2>/dev/null || break
            sleep 0.1
        done
        sleep 2
        RSS_CONNS[$p]=$(path_rss "$p")
        RSS_PEAK[$p]=$(FIELD=VmHWM path_rss "$p")
        read -r _ held failed <"$WORK/ready" || { held=0; failed=$IDLE_CONNS; }
        HELD[$p]=$held
        kill -TERM "$client" 2>/dev/null || true
        wait "$client" 2>/dev/null || true
        note "  $p: idle RSS $((RSS_IDLE[$p] / 1024)) MiB, with $held connections $((RSS_CONNS[$p] / 1024)) MiB (peak $((RSS_PEAK[$p] / 1024)) MiB; $failed failed)"
    done
    stop_all
    sleep 1
fi

# ---------------------------------------------------------------------------------------
# Workload 1: HTTP/1.1 keep-alive throughput, interleaved A/B/A/B, medians.

start_all
note "workload 1: wrk -t1 -c64 -d${SECS}s, $REPS interleaved repetitions over: ${PATHS[*]}"
for p in "${PATHS[@]}"; do
    wrk -t1 -c64 -d2s "http://127.0.0.1:${PORT[$p]}$TARGET_PATH" >/dev/null 2>&1 || true
done
declare -A RPS CPU P50 P99 ERRS
for rep in $(seq "$REPS"); do
    for p in "${PATHS[@]}"; do
        out=$WORK/wrk-$p-$rep.txt
        c0=$(path_cpu "$p")
        wrk -t1 -c64 -d"${SECS}s" --latency "http://127.0.0.1:${PORT[$p]}$TARGET_PATH" >"$out" 2>&1 || true
        c1=$(path_cpu "$p")
        reqs=$(awk '/requests in/ {print $1}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        errs=$(awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$out")
        p50=$(to_us "$(awk '$1=="50%" {print $2}' "$out")")
        p99=$(to_us "$(awk '$1=="99%" {print $2}' "$out")")
        [[ -n $reqs && $reqs -gt 0 ]] || die "wrk against $p gave no requests (see $out)"
        cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        RPS[$p]+="$rps "
        CPU[$p]+="$cpu_us "
        P50[$p]+="$p50 "
        P99[$p]+="$p99 "
        ERRS[$p]=$((${ERRS[$p]:-0} + errs))
        note "  rep $rep $p: $rps req/s, $cpu_us CPU us/req, p50 ${p50} us, p99 ${p99} us, $errs errors"
    done
done

# ---------------------------------------------------------------------------------------
# Workload 2: latency at a constant rate, half the slowest proxy's throughput, corrected
# for coordinated omission (oha -q --latency-correction), interleaved, medians.

med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
declare -A L50 L99 L999 LERR
RATE=""
if [[ -n $OHA ]]; then
    slowest=""
    for p in "${PATHS[@]}"; do
        [[ $p == direct ]] && continue
        r=$(med "${RPS[$p]}")
        if [[ -z $slowest ]] || awk -v a="$r" -v b="$slowest" 'BEGIN {exit !(a < b)}'; then slowest=$r; fi
    done
    RATE=$(awk -v r="$slowest" 'BEGIN {printf "%d", r / 2}')
    note "workload 2: oha -c64 -q$RATE --latency-correction -z${SECS}s, $REPS interleaved repetitions"
    for rep in $(seq "$REPS"); do
        for p in "${PATHS[@]}"; do
            out=$WORK/oha-$p-$rep.json
            "$OHA" -z "${SECS}s" -w -c 64 -q "$RATE" --latency-correction --no-tui --output-format json \
                --worker-threads 1 "http://127.0.0.1:${PORT[$p]}$TARGET_PATH" >"$out" 2>"$WORK/oha-$p-$rep.err" || true
            read -r l50 l99 l999 bad < <(python3 - "$out" <<'PY' 2>/dev/null || echo "nan nan nan 0"
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
ok = d.get("statusCodeDistribution", {}).get("200", 0)
bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k != "200")
bad += sum(d.get("errorDistribution", {}).values())
print(p["p50"] * 1e6, p["p99"] * 1e6, p["p99.9"] * 1e6, bad)
PY
            )
            L50[$p]+="$l50 "
            L99[$p]+="$l99 "
            L999[$p]+="$l999 "
            LERR[$p]=$((${LERR[$p]:-0} + ${bad%.*}))
            note "  rep $rep $p: p50 ${l50%.*} us, p99 ${l99%.*} us, p99.9 ${l999%.*} us, $bad errors"
        done
    done
fi

# ---------------------------------------------------------------------------------------
# Workload 3: h2c (HTTP/2 with prior knowledge), h2load -t1 -c16 -m16, req/s and CPU per
# request, interleaved, medians. Not the direct path: the upstream speaks HTTP/1.1 only.

# h2load_run P URL OUT: one h2load run against path P, its output in OUT. Sets HL_RPS,
# HL_CPU (proxy CPU µs a request), HL_FAILED and HL_PROTO (the application protocol h2load
# negotiated); fails when h2load got no answers.
h2load_run() {
    local p=$1 url=$2 out=$3 c0 c1 completed="" ok=""
    c0=$(path_cpu "$p")
    h2load -t1 -c16 -m16 -D "$SECS" --warm-up-time=1 "$url$TARGET_PATH" >"$out" 2>&1 || true
    c1=$(path_cpu "$p")
    # "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout"
    # No such line (h2load killed, or crashed): a run without answers.
    read -r completed ok < <(awk '/^requests:/ {print $6, $8}' "$out") || true
    HL_PROTO=$(awk '/^Application protocol:/ {print $3}' "$out")
    [[ -n ${ok:-} && $ok != 0 ]] || return 1
    HL_RPS=$(awk '/^finished in/ {print $4}' "$out")
    HL_FAILED=$((completed - ok))
    # The warm-up second is not in the count but is in the CPU time: add it at the same rate.
    HL_CPU=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$completed" -v r="$HL_RPS" 'BEGIN {printf "%.2f", t * 1e6 / hz / (n + r)}')
}

declare -A H2RPS H2CPU
H2=""
if have h2load; then
    H2=1
    note "workload 3: h2load -t1 -c16 -m16 -D${SECS}, $REPS interleaved repetitions"
    for rep in $(seq "$REPS"); do
        for p in "${PATHS[@]}"; do
            [[ $p == direct ]] && continue
            port=${PORT_H2[$p]:-${PORT[$p]}}
            out=$WORK/h2load-$p-$rep.txt
            if ! h2load_run "$p" "http://127.0.0.1:$port" "$out"; then
                note "  rep $rep $p: h2load got no answers (see $out)"
                continue
            fi
            H2RPS[$p]+="$HL_RPS "
            H2CPU[$p]+="$HL_CPU "
            ERRS[$p]=$((${ERRS[$p]:-0} + HL_FAILED))
            note "  rep $rep $p: $HL_RPS req/s, $HL_CPU CPU us/req, $HL_FAILED failed"
        done
    done
fi

# ---------------------------------------------------------------------------------------
# Workloads 5 and 6 start each proxy afresh, one at a time. start_one P UPSTREAM [tls]
# starts path P (not direct) in front of 127.0.0.1:UPSTREAM, on its usual port (PORT[P])
# or, with tls, on its TLS port (PORT_TLS[P]), and sets PROC_PIDS[P]; check_one P URL checks that
# it answers 200 on TARGET_PATH (fleetgate: forwarded to the fleet).

declare -A PORT_TLS
TLS_SUITE=TLS_AES_256_GCM_SHA384
start_one() {
    local p=$1 upstream=$2 tls=${3:-} name port master
    case $p in
        fleetgate)
            if [[ -n $tls ]]; then
                start_fleetgate fleetgate_tls "$P_FG_TLS" "$P_FG_TLS_ADMIN" false "$upstream" restart,tls
                PORT_TLS[$p]=$P_FG_TLS
            else
                start_fleetgate fleetgate_fresh "$P_FG" "$P_FG_ADMIN" false "$upstream" restart
                PORT[$p]=$P_FG
            fi
            PROC_PIDS[$p]=$LAST_PID
            ;;
        nginx)
            if [[ -n $tls ]]; then
                name=nginx_tls port=$P_NGX_TLS
                PORT_TLS[$p]=$port
                nginx_proxy_config "$name" "$upstream" "        listen 127.0.0.1:$port ssl http2;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_conf_command Ciphersuites $TLS_SUITE;" >"$WORK/$name.conf"
            else
                name=nginx_fresh port=$P_NGX
                PORT[$p]=$port
                nginx_proxy_config "$name" "$upstream" "        listen 127.0.0.1:$port;" >"$WORK/$name.conf"
            fi
            start "$name" nginx -p "$WORK" -c "$WORK/$name.conf" -g 'daemon off;'
            master=$LAST_PID
            wait_port "$port" "$name"
            # The master listens before it has forked both workers.
            for _ in $(seq 50); do
                (($(pgrep -c -P "$master") >= 2)) && break
                sleep 0.1
            done
            PROC_PIDS[$p]="$master $(children "$master")"
            ;;
        haproxy)
            if [[ -n $tls ]]; then
                name=haproxy_tls port=$P_HAP_TLS
                PORT_TLS[$p]=$port
                haproxy_config "$upstream" "127.0.0.1:$port ssl crt $WORK/tls/combined.pem ssl-min-ver TLSv1.3 ciphersuites $TLS_SUITE curves X25519 alpn h2,http/1.1" >"$WORK/$name.cfg"
            else
                name=haproxy_fresh port=$P_HAP
                PORT[$p]=$port
                haproxy_config "$upstream" "127.0.0.1:$port" >"$WORK/$name.cfg"
            fi
            start "$name" haproxy -db -f "$WORK/$name.cfg"
            PROC_PIDS[$p]=$LAST_PID
            wait_port "$port" "$name"
            ;;
        bare)
            start bare_fresh env TOKIO_WORKER_THREADS=2 "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$upstream"
            PORT[$p]=$P_BARE
            PROC_PIDS[$p]=$LAST_PID
            wait_port "$P_BARE" bare_fresh
            ;;
    esac
}

check_one() {
    local p=$1 url=$2 head
    head=$(curl -sk -o /dev/null -D - --max-time 5 "$url$TARGET_PATH" | tr -d '\r') || true
    [[ $head == "HTTP/"*" 200"* ]] || die "path $p does not answer 200 on $url$TARGET_PATH (logs in $WORK)"
    if [[ $p == fleetgate ]] && ! grep -qi '^x-fleetgate-target: fleet$' <<<"$head"; then
        die "fleetgate did not forward $url$TARGET_PATH to the fleet"
    fi
}

# ---------------------------------------------------------------------------------------
# Workload 5: one LOAD_STREAM_MIB MiB (default 1 GiB) download and one upload of as many
# bytes through each path, curl, interleaved, medians. Every transfer gets freshly started
# proxy processes, so VmHWM (the peak RSS since the process started) is the peak of that
# transfer. Downloads come from the nginx upstream (sendfile); uploads go to tiny_upstream
# (the sink), which reads the body to its end and answers how many bytes it got.

declare -A DN_MBS DN_CPU DN_RSS UP_MBS UP_CPU UP_RSS SERRS
STREAM_PATHS=(direct fleetgate nginx)
have haproxy && STREAM_PATHS+=(haproxy)
STREAM_PATHS+=(bare)

# One transfer through path P: DIR is down or up; REP names the raw output.
stream_one() {
    local p=$1 dir=$2 rep=$3 upstream=$P_UP
    local out=$WORK/stream-$dir-$p-$rep url code size speed rss0 c0 c1 peak err=""
    [[ $dir == up ]] && upstream=$P_SINK
    if [[ $p == direct ]]; then
        PORT[direct]=$upstream
        if [[ $dir == down ]]; then
            PROC_PIDS[direct]=$(children "$UPSTREAM_PID")
        else
            PROC_PIDS[direct]=$SINK_PID
        fi
    else
        start_one "$p" "$upstream"
        check_one "$p" "http://127.0.0.1:${PORT[$p]}"
    fi
    url=http://127.0.0.1:${PORT[$p]}
    rss0=$(path_rss "$p")
    c0=$(path_cpu "$p")
    if [[ $dir == down ]]; then
        curl -sS --max-time 900 -o /dev/null -D "$out.head" \
            -w '%{http_code} %{size_download} %{speed_download}\n' \
            "$url$STREAM_PATH" >"$out.txt" 2>"$out.err" || true
    else
        # -T streams the file with a Content-Length (--data-binary @file would read it
        # into memory first); "Expect:" drops curl's Expect: 100-continue, which would
        # make it wait up to 1 s on a path that does not answer 100 itself.
        curl -sS --max-time 900 -o "$out.body" -D "$out.head" -H 'Expect:' -X POST \
            -T "$WORK/stream.bin" -w '%{http_code} %{size_upload} %{speed_upload}\n' \
            "$url$UPLOAD_PATH" >"$out.txt" 2>"$out.err" || true
    fi
    c1=$(path_cpu "$p")
    peak=$(FIELD=VmHWM path_rss "$p")
    read -r code size speed <"$out.txt" || true
    if [[ ${code:-} != 200 ]]; then
        err="status ${code:-none} ($(head -c 200 "$out.err"))"
    elif [[ $size != "$STREAM_BYTES" ]]; then
        err="$size bytes moved, not $STREAM_BYTES"
    elif [[ $dir == up && $(cat "$out.body" 2>/dev/null) != "$STREAM_BYTES" ]]; then
        err="the upstream received $(head -c 40 "$out.body") bytes, not $STREAM_BYTES"
    elif [[ $p == fleetgate ]] && ! tr -d '\r' <"$out.head" | grep -qi '^x-fleetgate-target: fleet$'; then
        err="not forwarded to the fleet"
    fi
    if [[ $p != direct ]]; then
        stop_all
    fi
    if [[ -n $err ]]; then
        SERRS[$p]=$((${SERRS[$p]:-0} + 1))
        note "  rep $rep $dir $p: FAILED: $err (see $out.*)"
        return 0
    fi
    local mbs cpu
    mbs=$(awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}')
    cpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v b="$STREAM_BYTES" 'BEGIN {printf "%.0f", t * 1e3 / hz / (b / 1073741824)}')
    if [[ $dir == down ]]; then
        DN_MBS[$p]+="$mbs " DN_CPU[$p]+="$cpu " DN_RSS[$p]+="$peak "
    else
        UP_MBS[$p]+="$mbs " UP_CPU[$p]+="$cpu " UP_RSS[$p]+="$peak "
    fi
    if [[ $p == direct ]]; then
        note "  rep $rep $dir $p: $mbs MB/s, upstream CPU $cpu ms/GiB"
    else
        note "  rep $rep $dir $p: $mbs MB/s, CPU $cpu ms/GiB, RSS $((rss0 / 1024)) MiB before, peak $((peak / 1024)) MiB"
    fi
}

stop_all
start sink "$TINY" "127.0.0.1:$P_SINK"
SINK_PID=$LAST_PID
wait_port "$P_SINK" sink
# One untimed download first: it brings the file into the page cache (a sparse file's
# holes are read into it as zeroed pages), for the upstream's sendfile and curl's reads.
curl -sf -o /dev/null --max-time 900 "http://127.0.0.1:$P_UP$STREAM_PATH" ||
    die "the nginx upstream does not serve $STREAM_PATH"
note "workload 5: one $STREAM_MIB MiB download and upload per path (curl, fresh processes), $REPS interleaved repetitions over: ${STREAM_PATHS[*]}"
for rep in $(seq "$REPS"); do
    for dir in down up; do
        for p in "${STREAM_PATHS[@]}"; do
            stream_one "$p" "$dir" "$rep"
        done
    done
done

# ---------------------------------------------------------------------------------------
# Workload 6: TLS, fleetgate, nginx and HAProxy on fresh processes with one self-signed
# ECDSA P-256 certificate, TLS 1.3, TLS_AES_256_GCM_SHA384, X25519 (nginx and HAProxy
# are held to these; fleetgate follows the client's preference, which is these). (a) Full
# handshakes: TLS_CLIENTS openssl s_time -new at once (a new session on every connection,
# never resumed), each connection one GET of TARGET_PATH (HTTP/1.0, closed after the
# answer). (b) wrk -t1 -c64 over https, keep-alive, as workload 1. Interleaved, medians.

TLS_CLIENTS=4
declare -A HS_RATE HS_CPU TRPS TCPU T2RPS T2CPU TERRS
TLS_PATHS=()
TLS_PARAMS=""
if have openssl; then
    stop_all
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/tls/openssl.log" 2>&1 ||
        die "openssl could not make a certificate (see $WORK/tls/openssl.log)"
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/combined.pem"
    TLS_PATHS=(fleetgate nginx)
    have haproxy && TLS_PATHS+=(haproxy)
    for p in "${TLS_PATHS[@]}"; do
        start_one "$p" "$P_UP" tls
        check_one "$p" "https://127.0.0.1:${PORT_TLS[$p]}"
        # What was negotiated, as openssl s_client -brief reports it.
        params=$(openssl s_client -connect "127.0.0.1:${PORT_TLS[$p]}" -brief </dev/null 2>&1 | tr -d '\r' | awk -F': ' '
            $1 == "Protocol version" {v = $2} $1 == "Ciphersuite" {c = $2}
            $1 ~ /Temp Key$/ {split($2, k, ","); g = k[1]} $1 == "Signature type" {s = $2}
            END {print v, c, g, s}')
        note "workload 6: $p negotiates $params"
        if [[ -z $TLS_PARAMS ]]; then
            TLS_PARAMS=$params
        elif [[ $params != "$TLS_PARAMS" ]]; then
            note "  (not the same as the first path's: $TLS_PARAMS)"
            TLS_PARAMS="$TLS_PARAMS (not on every path: see the notes)"
        fi
    done

    # (a) Handshakes. s_time's own totals are in whole seconds: the rate is the
    # connections over the wall-clock time of the run.
    hs_run() {
        local p=$1 secs=$2 out=$3 i pid pids=() t0 t1 c0 c1 n=0 bad=0 conns bytes
        c0=$(path_cpu "$p")
        t0=$(date +%s.%N)
        for i in $(seq "$TLS_CLIENTS"); do
            openssl s_time -connect "127.0.0.1:${PORT_TLS[$p]}" -new -time "$secs" \
                -ciphersuites "$TLS_SUITE" -www "$TARGET_PATH" >"$out-$i.txt" 2>&1 &
            pids+=("$!")
            PIDS+=("$!")
        done
        for pid in "${pids[@]}"; do
            wait "$pid" || bad=$((bad + 1))
        done
        t1=$(date +%s.%N)
        c1=$(path_cpu "$p")
        for i in $(seq "$TLS_CLIENTS"); do
            # "1062 connections in 3 real seconds, 1235 bytes read per connection"
            conns=0 bytes=0
            read -r conns bytes < <(awk '/connections in .* real seconds/ {print $1, $7}' "$out-$i.txt") || true
            n=$((n + ${conns:-0}))
            # Less than the 1 KiB body: error answers.
            ((${bytes:-0} >= 1024)) || bad=$((bad + 1))
        done
        HS_N=$n HS_BAD=$bad
        HS_R=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
        HS_C=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN {if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan"}')
    }
    note "workload 6a: $TLS_CLIENTS x openssl s_time -new -time $SECS, $REPS interleaved repetitions over: ${TLS_PATHS[*]}"
    for p in "${TLS_PATHS[@]}"; do
        hs_run "$p" 1 "$WORK/s_time-$p-warm"
    done
    for rep in $(seq "$REPS"); do
        for p in "${TLS_PATHS[@]}"; do
            hs_run "$p" "$SECS" "$WORK/s_time-$p-$rep"
            TERRS[$p]=$((${TERRS[$p]:-0} + HS_BAD))
            if ((HS_N == 0)); then
                note "  rep $rep $p: no handshakes (see $WORK/s_time-$p-$rep-*.txt)"
                continue
            fi
            HS_RATE[$p]+="$HS_R "
            HS_CPU[$p]+="$HS_C "
            note "  rep $rep $p: $HS_N handshakes, $HS_R/s, $HS_C CPU us/handshake, $HS_BAD failed clients"
        done
    done

    # (b) Requests over TLS keep-alive connections.
    note "workload 6b: wrk -t1 -c64 -d${SECS}s https, $REPS interleaved repetitions over: ${TLS_PATHS[*]}"
    for p in "${TLS_PATHS[@]}"; do
        wrk -t1 -c64 -d2s "https://127.0.0.1:${PORT_TLS[$p]}$TARGET_PATH" >/dev/null 2>&1 || true
    done
    for rep in $(seq "$REPS"); do
        for p in "${TLS_PATHS[@]}"; do
            out=$WORK/wrk-tls-$p-$rep.txt
            c0=$(path_cpu "$p")
            wrk -t1 -c64 -d"${SECS}s" "https://127.0.0.1:${PORT_TLS[$p]}$TARGET_PATH" >"$out" 2>&1 || true
            c1=$(path_cpu "$p")
            reqs=$(awk '/requests in/ {print $1}' "$out")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            errs=$(awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$out")
            if [[ -z $reqs || $reqs == 0 ]]; then
                note "  rep $rep $p: wrk got no answers over TLS (see $out)"
                TERRS[$p]=$((${TERRS[$p]:-0} + 1))
                continue
            fi
            cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
            TRPS[$p]+="$rps "
            TCPU[$p]+="$cpu_us "
            TERRS[$p]=$((${TERRS[$p]:-0} + errs))
            note "  rep $rep $p: $rps req/s, $cpu_us CPU us/req, $errs errors"
        done
    done

    # (c) HTTP/2 over TLS (ALPN h2), as workload 3: the same connections and streams.
    if [[ -n $H2 ]]; then
        note "workload 6c: h2load -t1 -c16 -m16 -D$SECS over https (ALPN h2), $REPS interleaved repetitions over: ${TLS_PATHS[*]}"
        for rep in $(seq "$REPS"); do
            for p in "${TLS_PATHS[@]}"; do
                out=$WORK/h2load-tls-$p-$rep.txt
                if ! h2load_run "$p" "https://127.0.0.1:${PORT_TLS[$p]}" "$out" || [[ $HL_PROTO != h2 ]]; then
                    note "  rep $rep $p: h2load got no HTTP/2 answers over TLS (see $out)"
                    TERRS[$p]=$((${TERRS[$p]:-0} + 1))
                    continue
                fi
                T2RPS[$p]+="$HL_RPS "
                T2CPU[$p]+="$HL_CPU "
                TERRS[$p]=$((${TERRS[$p]:-0} + HL_FAILED))
                note "  rep $rep $p: $HL_RPS req/s, $HL_CPU CPU us/req, $HL_FAILED failed"
            done
        done
    fi
    stop_all
fi

# ---------------------------------------------------------------------------------------
# The table.

declare -A M_RPS M_CPU M_L99
for p in "${PATHS[@]}"; do
    M_RPS[$p]=$(med "${RPS[$p]}")
    M_CPU[$p]=$(med "${CPU[$p]}")
    M_L99[$p]=""
    [[ -n $RATE ]] && M_L99[$p]=$(med "${L99[$p]}")
done

label() {
    case $1 in
        direct) echo "direct (wrk → nginx upstream)" ;;
        fleetgate) echo "fleetgate" ;;
        fleetgate_log) echo "fleetgate, access log on" ;;
        nginx) echo "nginx proxy" ;;
        haproxy) echo "HAProxy" ;;
        bare) echo "bare hyper" ;;
        bare_pc) echo "bare hyper, per-core" ;;
    esac
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
us() { awk -v v="$1" 'BEGIN {if (v == "" || v == "nan") print "—"; else printf "%.0f", v}'; }
per_conn() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print ""}'; }
# The median of a list of figures, or nothing when there is none.
med_or() { if [[ -n ${1// /} ]]; then med "$1"; fi; }
# A figure with DIGITS decimals (after dividing by DIV), or — when there is none.
num() { awk -v v="$1" -v d="$2" -v k="${3:-1}" 'BEGIN {if (v == "" || v == "nan") print "—"; else printf "%.*f", d, v / k}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || a == "nan" || b == "nan" || b + 0 == 0) print "—"; else printf "%.2f", a / b}'; }

{
    echo
    echo "1: HTTP/1.1 keep-alive, wrk -t1 -c64 -d${SECS}s, GET $TARGET_PATH (1 KiB answer); CPU = utime+stime of the proxy's processes / requests."
    if [[ -n $RATE ]]; then
        echo "2: oha -c64 -q$RATE (half the slowest proxy's req/s) --latency-correction -z${SECS}s, same request."
    else
        echo "2: skipped (oha not found)."
    fi
    if [[ -n $H2 ]]; then
        echo "3: h2c with prior knowledge, h2load -t1 -c16 -m16 -D${SECS}, same request; CPU as in 1."
    else
        echo "3: skipped (h2load not found)."
    fi
    echo "4: $IDLE_CONNS idle keep-alive connections, each after one request; VmRSS summed over the proxy's processes, 2 s after the last answer; peak = VmHWM (the most resident at once, during the connections' arrival)."
    echo "Medians of $REPS interleaved runs (1, 2); errors = non-2xx + socket errors over all runs."
    echo
    echo "| path | 1: req/s | 1: CPU µs/req | 2: p50 µs | 2: p99 µs | 2: p99.9 µs | 3: h2c req/s | 3: h2c CPU µs/req | errors | 4: idle RSS MiB | 4: RSS with conns MiB | 4: peak RSS MiB | 4: bytes per conn |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${PATHS[@]}"; do
        cpu=${M_CPU[$p]}
        [[ $p == direct ]] && cpu="($cpu upstream)"
        l50="—" l99="—" l999="—"
        if [[ -n $RATE ]]; then
            l50=$(us "$(med "${L50[$p]}")") l99=$(us "${M_L99[$p]}") l999=$(us "$(med "${L999[$p]}")")
        fi
        h2r="—" h2c="—"
        if [[ -n ${H2RPS[$p]:-} ]]; then
            h2r=$(us "$(med "${H2RPS[$p]}")") h2c=$(med "${H2CPU[$p]}")
        fi
        if [[ -n ${RSS_IDLE[$p]:-} ]]; then
            idle=$(mib "${RSS_IDLE[$p]}")
            conns=$(mib "${RSS_CONNS[$p]}")
            peak=$(mib "${RSS_PEAK[$p]}")
            ((HELD[$p] == IDLE_CONNS)) || conns="$conns (${HELD[$p]} held)"
            per=$(per_conn "${RSS_IDLE[$p]}" "${RSS_CONNS[$p]}" "${HELD[$p]}")
        else
            idle="—" conns="—" peak="—" per="—"
        fi
        printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" \
            "${M_RPS[$p]}" "$cpu" "$l50" "$l99" "$l999" "$h2r" "$h2c" "$((ERRS[$p] + ${LERR[$p]:-0}))" "$idle" "$conns" "$peak" "${per:-—}"
    done
    echo
    echo "| fleetgate / … | 1: req/s | 1: CPU µs/req | 2: p99 | 3: h2c req/s | 3: h2c CPU µs/req | 4: idle RSS | 4: RSS with conns | 4: bytes per conn |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in nginx haproxy bare bare_pc direct fleetgate_log; do
        [[ -n ${M_RPS[$p]:-} ]] || continue
        cpu_r="—"
        [[ $p != direct ]] && cpu_r=$(ratio "${M_CPU[fleetgate]}" "${M_CPU[$p]}")
        idle_r="—" conns_r="—" per_r="—"
        if [[ -n ${RSS_IDLE[$p]:-} && -n ${RSS_IDLE[fleetgate]:-} ]]; then
            idle_r=$(ratio "${RSS_IDLE[fleetgate]}" "${RSS_IDLE[$p]}")
            conns_r=$(ratio "${RSS_CONNS[fleetgate]}" "${RSS_CONNS[$p]}")
            per_r=$(ratio "$(per_conn "${RSS_IDLE[fleetgate]}" "${RSS_CONNS[fleetgate]}" "${HELD[fleetgate]}")" \
                "$(per_conn "${RSS_IDLE[$p]}" "${RSS_CONNS[$p]}" "${HELD[$p]}")")
        fi
        h2r_r="—" h2c_r="—"
        if [[ -n ${H2RPS[$p]:-} && -n ${H2RPS[fleetgate]:-} ]]; then
            h2r_r=$(ratio "$(med "${H2RPS[fleetgate]}")" "$(med "${H2RPS[$p]}")")
            h2c_r=$(ratio "$(med "${H2CPU[fleetgate]}")" "$(med "${H2CPU[$p]}")")
        fi
        name=$(label "$p")
        [[ $p == fleetgate_log ]] && name="fleetgate, access log on (off / on)"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
            "$(ratio "${M_RPS[fleetgate]}" "${M_RPS[$p]}")" "$cpu_r" \
            "$(ratio "${M_L99[fleetgate]}" "${M_L99[$p]}")" "$h2r_r" "$h2c_r" "$idle_r" "$conns_r" "$per_r"
    done
    echo
    echo "The access-log run wrote $(grep -c '"message":"access"' "$WORK/fleetgate_log.log") access lines ($(du -m "$WORK/fleetgate_log.log" | cut -f1) MiB) to a file."
    echo
    echo "5: one $STREAM_MIB MiB GET of $STREAM_PATH (from the nginx upstream, sendfile) and one $STREAM_MIB MiB POST to $UPLOAD_PATH (to tiny_upstream, which reads and counts it), curl, each transfer on freshly started proxy processes; MB/s = 10^6 bytes/s, curl's average; CPU as in 1, per GiB moved; peak RSS = VmHWM summed over the proxy's processes."
    if [[ -n $TLS_PARAMS ]]; then
        echo "6: TLS on fresh processes, negotiated: $TLS_PARAMS (self-signed P-256 certificate). (a) $TLS_CLIENTS x openssl s_time -new -time $SECS: every connection a full handshake (no resumption) and one GET $TARGET_PATH (HTTP/1.0, closed after it); CPU per connection. (b) wrk -t1 -c64 -d${SECS}s over https, keep-alive, same request; CPU as in 1. (c) h2load -t1 -c16 -m16 -D${SECS} over https (ALPN h2), same request; CPU as in 3."
    else
        echo "6: skipped (openssl not found)."
    fi
    echo "Medians of $REPS interleaved runs; errors = failed or short transfers (5), failed s_time clients, wrk errors and failed h2load requests (6), over all runs."
    echo
    echo "| path | 5: down MB/s | 5: down CPU ms/GiB | 5: down peak RSS MiB | 5: up MB/s | 5: up CPU ms/GiB | 5: up peak RSS MiB | 6: handshakes/s | 6: CPU µs/handshake | 6: TLS req/s | 6: TLS CPU µs/req | 6: TLS h2 req/s | 6: TLS h2 CPU µs/req | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${STREAM_PATHS[@]}"; do
        name=$(label "$p")
        [[ $p == direct ]] && name="direct (curl → upstream)"
        dn_cpu=$(num "$(med_or "${DN_CPU[$p]:-}")" 0) up_cpu=$(num "$(med_or "${UP_CPU[$p]:-}")" 0)
        dn_rss=$(num "$(med_or "${DN_RSS[$p]:-}")" 1 1024) up_rss=$(num "$(med_or "${UP_RSS[$p]:-}")" 1 1024)
        if [[ $p == direct ]]; then
            [[ $dn_cpu != "—" ]] && dn_cpu="($dn_cpu upstream)"
            [[ $up_cpu != "—" ]] && up_cpu="($up_cpu upstream)"
            dn_rss="—" up_rss="—"
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
            "$(num "$(med_or "${DN_MBS[$p]:-}")" 0)" "$dn_cpu" "$dn_rss" \
            "$(num "$(med_or "${UP_MBS[$p]:-}")" 0)" "$up_cpu" "$up_rss" \
            "$(num "$(med_or "${HS_RATE[$p]:-}")" 0)" "$(num "$(med_or "${HS_CPU[$p]:-}")" 1)" \
            "$(num "$(med_or "${TRPS[$p]:-}")" 0)" "$(num "$(med_or "${TCPU[$p]:-}")" 2)" \
            "$(num "$(med_or "${T2RPS[$p]:-}")" 0)" "$(num "$(med_or "${T2CPU[$p]:-}")" 2)" \
            "$((${SERRS[$p]:-0} + ${TERRS[$p]:-0}))"
    done
    echo
    echo "| fleetgate / … | 5: down MB/s | 5: down CPU | 5: down peak RSS | 5: up MB/s | 5: up CPU | 5: up peak RSS | 6: handshakes/s | 6: CPU/handshake | 6: TLS req/s | 6: TLS CPU/req | 6: TLS h2 req/s | 6: TLS h2 CPU/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    # fr FIGURE P: fleetgate's median over P's.
    fr() {
        local -n fig=$1
        ratio "$(med_or "${fig[fleetgate]:-}")" "$(med_or "${fig[$2]:-}")"
    }
    for p in nginx haproxy bare direct; do
        [[ " ${STREAM_PATHS[*]} " == *" $p "* ]] || continue
        if [[ $p == direct ]]; then
            printf '| %s | %s | — | — | %s | — | — | — | — | — | — | — | — |\n' "direct (curl → upstream)" "$(fr DN_MBS "$p")" "$(fr UP_MBS "$p")"
            continue
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" \
            "$(fr DN_MBS "$p")" "$(fr DN_CPU "$p")" "$(fr DN_RSS "$p")" \
            "$(fr UP_MBS "$p")" "$(fr UP_CPU "$p")" "$(fr UP_RSS "$p")" \
            "$(fr HS_RATE "$p")" "$(fr HS_CPU "$p")" "$(fr TRPS "$p")" "$(fr TCPU "$p")" \
            "$(fr T2RPS "$p")" "$(fr T2CPU "$p")"
    done
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); load average before the run: $LOAD_BEFORE"
} | tee "$WORK/table.md"
if [[ -n ${LOAD_TABLE:-} ]]; then
    cp "$WORK/table.md" "$LOAD_TABLE"
fi
