#!/usr/bin/env bash
# The side-by-side load harness: fleetgate against a bare hyper forwarder, nginx and
# HAProxy in front of one nginx upstream, all on 127.0.0.1. See docs/performance.md.
#
#   benches/load/run.sh            full run (3 interleaved repetitions, 10 s each)
#   benches/load/run.sh --quick    1 repetition, 5 s each
#   benches/load/run.sh --smoke    CI-sized: fleetgate only, in front of tiny_upstream, curl
#
# Environment: LOAD_SECS (length of one throughput run), LOAD_REPS (repetitions),
# LOAD_IDLE_CONNS (workload 4, default 10000), LOAD_PORT_BASE (default 19100; ten ports
# from it are used), LOAD_KEEP=1 keeps the scratch directory (configs, logs).
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
            sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
# A fleet-ok GET of the shipped manifest (routes/40-fleet.toml).
TARGET_PATH=/api/acme/threads
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
        note "building: cargo build --release --bin fleetgate --example $*"
        local args=(--release --bin fleetgate)
        local ex
        for ex in "$@"; do args+=(--example "$ex"); done
        (cd "$ROOT" && cargo build --locked --quiet "${args[@]}") || die "cargo build failed"
    fi
    [[ -x $FLEETGATE ]] || die "$FLEETGATE is missing: cargo build --release --examples --bin fleetgate"
}

# fleetgate's configuration: role serve, the shipped routes/, one fleet upstream,
# admission on but never shedding, the guard at its defaults. Its log (stderr) goes to
# a file in the scratch directory.
fleetgate_config() {
    local file=$1 listen=$2 admin=$3 access_log=$4
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
fleet = ["http://127.0.0.1:$P_UP"]

[timeouts]
# The client keep-alive idle timeout, like nginx's keepalive_timeout below.
header_read = 120000

[admission]
max_inflight = 100000
EOF
}

start_fleetgate() {
    local name=$1 listen=$2 admin=$3 access_log=$4
    fleetgate_config "$WORK/$name.toml" "$listen" "$admin" "$access_log"
    start "$name" env TOKIO_WORKER_THREADS=2 "$FLEETGATE" serve --config "$WORK/$name.toml"
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
have haproxy || missing_pkgs+=(haproxy)
have python3 || missing_pkgs+=(python3)
if ((${#missing_pkgs[@]})); then
    note "missing: ${missing_pkgs[*]} (install: apt-get install -y nginx haproxy wrk nghttp2-client linux-perf python3)"
fi
have nginx || die "nginx is the upstream of every path; install the Debian package nginx"
have wrk || die "wrk drives workload 1; install the Debian package wrk"
have haproxy || note "skipping the HAProxy path (Debian package haproxy)"
have python3 || note "skipping workload 4, idle connections (Debian package python3)"
OHA=$(command -v oha || true)
[[ -z $OHA && -x ${CARGO_HOME:-$HOME/.cargo}/bin/oha ]] && OHA=${CARGO_HOME:-$HOME/.cargo}/bin/oha
[[ -n $OHA ]] || note "skipping workload 2, latency at a fixed rate (oha: cargo install oha; wrk2 is not in Debian)"
have h2load || note "skipping workload 3, h2c (h2load: Debian package nghttp2-client)"
note "not built yet, skipped: workload 5 (1 GiB streams), 6 (TLS handshakes)"

build bare_forwarder
[[ -x $BARE ]] || die "$BARE is missing: cargo build --release --example bare_forwarder"

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
    }
}
EOF
} >"$WORK/upstream.conf"

{
    echo "worker_processes 2;"
    nginx_common nginx
    echo "http {"
    nginx_http_common nginx
    cat <<EOF
    upstream fleet {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$P_NGX;
        # nginx 1.22 serves h2c (prior knowledge) only on a listener of its own.
        listen 127.0.0.1:$P_NGX_H2 http2;
        location / {
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx.conf"

cat >"$WORK/haproxy.cfg" <<EOF
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
    bind 127.0.0.1:$P_HAP
    default_backend fleet
backend fleet
    server up 127.0.0.1:$P_UP
EOF

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

stop_all() {
    # Everything but the upstream, which stays for the whole run.
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        if [[ $pid == "$UPSTREAM_PID" ]]; then
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
    local total=0 pid f
    for pid in "$@"; do
        # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $f
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# VmRSS of the pids, summed, in KiB.
rss_kib() {
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# wrk's latency figure (e.g. 312.00us, 1.20ms) in microseconds.
to_us() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print "nan" }'; }

# ---------------------------------------------------------------------------------------
# Workload 4: idle keep-alive connections (fresh processes, before any load).

declare -A RSS_IDLE RSS_CONNS HELD
if have python3; then
    start_all
    note "workload 4: $IDLE_CONNS idle keep-alive connections per path"
    for p in "${PATHS[@]}"; do
        [[ $p == direct || $p == fleetgate_log ]] && continue
        sleep 1
        RSS_IDLE[$p]=$(rss_kib ${PROC_PIDS[$p]})
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
        RSS_CONNS[$p]=$(rss_kib ${PROC_PIDS[$p]})
        read -r _ held failed <"$WORK/ready" || { held=0; failed=$IDLE_CONNS; }
        HELD[$p]=$held
        kill -TERM "$client" 2>/dev/null || true
        wait "$client" 2>/dev/null || true
        note "  $p: idle RSS $((RSS_IDLE[$p] / 1024)) MiB, with $held connections $((RSS_CONNS[$p] / 1024)) MiB ($failed failed)"
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
        c0=$(cpu_ticks ${PROC_PIDS[$p]})
        wrk -t1 -c64 -d"${SECS}s" --latency "http://127.0.0.1:${PORT[$p]}$TARGET_PATH" >"$out" 2>&1 || true
        c1=$(cpu_ticks ${PROC_PIDS[$p]})
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
            c0=$(cpu_ticks ${PROC_PIDS[$p]})
            h2load -t1 -c16 -m16 -D "$SECS" --warm-up-time=1 "http://127.0.0.1:$port$TARGET_PATH" >"$out" 2>&1 || true
            c1=$(cpu_ticks ${PROC_PIDS[$p]})
            # "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout"
            read -r done ok < <(awk '/^requests:/ {print $6, $8}' "$out")
            rps=$(awk '/^finished in/ {print $4}' "$out")
            if [[ -z ${ok:-} || $ok == 0 ]]; then
                note "  rep $rep $p: h2load got no answers (see $out)"
                continue
            fi
            # The warm-up second is not in the count but is in the CPU time: add it at the same rate.
            cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$done" -v r="$rps" 'BEGIN {printf "%.2f", t * 1e6 / hz / (n + r)}')
            H2RPS[$p]+="$rps "
            H2CPU[$p]+="$cpu_us "
            ERRS[$p]=$((${ERRS[$p]:-0} + done - ok))
            note "  rep $rep $p: $rps req/s, $cpu_us CPU us/req, $((done - ok)) failed"
        done
    done
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
    esac
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
us() { awk -v v="$1" 'BEGIN {if (v == "" || v == "nan") print "—"; else printf "%.0f", v}'; }
per_conn() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print ""}'; }
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
    echo "4: $IDLE_CONNS idle keep-alive connections, each after one request; VmRSS summed over the proxy's processes."
    echo "Medians of $REPS interleaved runs (1, 2); errors = non-2xx + socket errors over all runs."
    echo
    echo "| path | 1: req/s | 1: CPU µs/req | 2: p50 µs | 2: p99 µs | 2: p99.9 µs | 3: h2c req/s | 3: h2c CPU µs/req | errors | 4: idle RSS MiB | 4: RSS with conns MiB | 4: bytes per conn |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
            ((HELD[$p] == IDLE_CONNS)) || conns="$conns (${HELD[$p]} held)"
            per=$(per_conn "${RSS_IDLE[$p]}" "${RSS_CONNS[$p]}" "${HELD[$p]}")
        else
            idle="—" conns="—" per="—"
        fi
        printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" \
            "${M_RPS[$p]}" "$cpu" "$l50" "$l99" "$l999" "$h2r" "$h2c" "$((ERRS[$p] + ${LERR[$p]:-0}))" "$idle" "$conns" "${per:-—}"
    done
    echo
    echo "| fleetgate / … | 1: req/s | 1: CPU µs/req | 2: p99 | 3: h2c req/s | 3: h2c CPU µs/req | 4: idle RSS | 4: RSS with conns | 4: bytes per conn |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in nginx haproxy bare direct fleetgate_log; do
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
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); load average before the run: $LOAD_BEFORE"
} | tee "$WORK/table.md"
if [[ -n ${LOAD_TABLE:-} ]]; then
    cp "$WORK/table.md" "$LOAD_TABLE"
fi
