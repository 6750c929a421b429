#!/usr/bin/env bash
# bench/listeners.sh — the same listener load against icecast2 and onair, side by side.
#
# Usage:  bash bench/listeners.sh [--metadata] [N ...]      (default N: 1000 5000 10000 20000)
#
# For each N and each server: start the server on loopback with limits above N, feed /live
# from one real-time ffmpeg source (MP3 128 kbit/s CBR), wait for the mount, run
# onair-loadtest (N listeners, metered server pid), stop everything. Prints a markdown table
# per N (icecast2 | onair | onair/icecast2) and keeps JSON, tables and logs in
# bench/results/<timestamp>/.
#
# Environment (all optional):
#   DURATION=30          hold seconds per run (after the ramp)
#   METADATA=0           1 = listeners send Icy-MetaData: 1 (same as --metadata); the titles
#                        are then updated every 5 s through /admin/metadata
#   SERVERS="icecast2 onair"
#   RAMP=500             new connections per second (icecast2 2.4 listens with a backlog of
#                        5: much faster ramps overflow its accept queue and cost it listeners)
#   ICECAST_PORT=18000   ONAIR_PORT=18001
#   BIND_IPS=127.0.0.2,...,127.0.0.9   local source addresses for the listeners
#   INPUT_SECONDS=600    length of the generated test input
#   CAP_TO_NOFILE=1      lower N to (open-file hard limit - 200) when it does not fit: every
#                        server and the load tool is one process holding N sockets
#   TUNE_SYSCTL=1        as root, raise net.core.somaxconn and tcp_max_syn_backlog if lower
#   SETTLE=3             seconds between the mount coming up and the load (burst fills)
#   ONAIR_EXTRA=""       TOML appended to the generated onair config, e.g. "[defaults]\nchunk_ms = 1000"
#   ONAIR_BIN=path       use this onair binary instead of building target/release/onair
#
# Runs as root (icecast2 is then told to drop to the icecast2 user, which it requires) or as
# an ordinary user.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

DURATION=${DURATION:-30}
METADATA=${METADATA:-0}
SERVERS=${SERVERS:-"icecast2 onair"}
RAMP=${RAMP:-500}
ICECAST_PORT=${ICECAST_PORT:-18000}
ONAIR_PORT=${ONAIR_PORT:-18001}
BIND_IPS=${BIND_IPS:-127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9}
INPUT_SECONDS=${INPUT_SECONDS:-600}
CAP_TO_NOFILE=${CAP_TO_NOFILE:-1}
TUNE_SYSCTL=${TUNE_SYSCTL:-1}
SETTLE=${SETTLE:-3}
PASSWORD=hackme

COUNTS=()
for arg in "$@"; do
    case "$arg" in
        --metadata) METADATA=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *[!0-9]* | '')
            echo "unknown argument: $arg (expected --metadata or listener counts)" >&2
            exit 2
            ;;
        *) COUNTS+=("$arg") ;;
    esac
done
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 5000 10000 20000)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in curl jq ffmpeg; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y $tool)"
done
for server in $SERVERS; do
    case "$server" in
        icecast2) command -v icecast2 >/dev/null || die "icecast2 is required (apt-get install -y icecast2)" ;;
        onair) ;;
        *) die "unknown server in SERVERS: $server" ;;
    esac
done

# ---------------------------------------------------------------- process bookkeeping
PIDS=()
WORK=$(mktemp -d /tmp/onair-bench.XXXXXX)
chmod 755 "$WORK" # icecast2 drops to its own user and must reach its log dir

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=()
    for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || kept+=("$i"); done
    PIDS=("${kept[@]}")
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- limits
if ! ulimit -n 200000 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
NOFILE=$(ulimit -n)
log "open-file limit for servers and load tool: $NOFILE (hard $(ulimit -Hn))"

if [ "$(id -u)" = 0 ] && [ "$TUNE_SYSCTL" = 1 ]; then
    raise_sysctl() {
        local key=$1 want=$2 have
        have=$(sysctl -n "$key" 2>/dev/null) || return 0
        if [ "$have" -lt "$want" ]; then
            if sysctl -q -w "$key=$want" 2>/dev/null; then
                log "sysctl $key: $have -> $want"
            else
                log "warning: could not raise sysctl $key ($have)"
            fi
        fi
    }
    raise_sysctl net.core.somaxconn 4096
    raise_sysctl net.ipv4.tcp_max_syn_backlog 8192
fi

# ---------------------------------------------------------------- build
packages=(-p onair-loadtest)
case " $SERVERS " in *" onair "*) [ -n "${ONAIR_BIN:-}" ] || packages+=(-p onair) ;; esac
log "building ${packages[*]} (release)"
(cd "$ROOT" && cargo build --release "${packages[@]}")
LOADTEST="$ROOT/target/release/onair-loadtest"
ONAIR=${ONAIR_BIN:-"$ROOT/target/release/onair"}

# ---------------------------------------------------------------- test input
INPUT_DIR=/tmp/onair-bench-input
INPUT="$INPUT_DIR/input-${INPUT_SECONDS}s.mp3"
if [ ! -s "$INPUT" ]; then
    mkdir -p "$INPUT_DIR"
    log "generating $INPUT_SECONDS s of test audio (MP3 128 kbit/s CBR, 44.1 kHz stereo)"
    # A slowly moving chord with a little noise: enough spectral content that the encoder
    # spends the full bitrate, like music.
    ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f lavfi -i "aevalsrc=0.2*sin(2*PI*(220+20*sin(0.1*t))*t)+0.15*sin(2*PI*277.2*t)+0.15*sin(2*PI*329.6*t)+0.1*sin(2*PI*(440+3*t)*t)|0.2*sin(2*PI*(220+20*sin(0.1*t))*t+1)+0.15*sin(2*PI*329.6*t)+0.1*sin(2*PI*554.4*t):s=44100:d=$INPUT_SECONDS" \
        -f lavfi -i "anoisesrc=c=pink:a=0.05:r=44100:d=$INPUT_SECONDS" \
        -filter_complex "[0:a][1:a]amix=inputs=2:normalize=0[a]" -map "[a]" \
        -ac 2 -ar 44100 -c:a libmp3lame -b:a 128k -id3v2_version 0 -write_xing 0 \
        "$INPUT.tmp.mp3"
    mv "$INPUT.tmp.mp3" "$INPUT"
fi

RESULTS="$BENCH/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RESULTS"
log "results in $RESULTS"

# ---------------------------------------------------------------- servers
SERVER_PID=
SOURCE_PID=
META_PID=

start_icecast2() {
    local clients=$1 dir="$WORK/icecast2" changeowner=""
    rm -rf "$dir"
    mkdir -p "$dir/log"
    if [ "$(id -u)" = 0 ]; then
        # Icecast refuses to run as root unless told which user to become.
        changeowner="        <changeowner><user>icecast2</user><group>icecast</group></changeowner>"
        chown icecast2:icecast "$dir/log"
    fi
    sed -e "s|@CLIENTS@|$clients|g" -e "s|@PORT@|$ICECAST_PORT|g" \
        -e "s|@PASSWORD@|$PASSWORD|g" -e "s|@LOGDIR@|$dir/log|g" \
        -e "s|@CHANGEOWNER@|$changeowner|" "$BENCH/icecast.xml.in" >"$dir/icecast.xml"
    icecast2 -c "$dir/icecast.xml" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=$ICECAST_PORT
}

start_onair() {
    local clients=$1 dir="$WORK/onair"
    [ -x "$ONAIR" ] || die "$ONAIR not built"
    rm -rf "$dir"
    mkdir -p "$dir/log"
    sed -e "s|@CLIENTS@|$clients|g" "$BENCH/onair.toml.in" >"$dir/onair.toml"
    if [[ -n "${ONAIR_EXTRA:-}" ]]; then printf "%b\n" "$ONAIR_EXTRA" >>"$dir/onair.toml"; fi
    "$ONAIR" serve --bind "127.0.0.1:$ONAIR_PORT" --source-password "$PASSWORD" \
        --admin-password "$PASSWORD" --config "$dir/onair.toml" >"$dir/log/onair.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=$ONAIR_PORT
}

server_logs() { # server -> directory with its logs
    case "$1" in
        icecast2) echo "$WORK/icecast2" ;;
        onair) echo "$WORK/onair" ;;
    esac
}

# wait_until SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.2 s.
wait_until() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited while waiting for $what"
        sleep 0.2
    done
    die "timed out after ${seconds}s waiting for $what"
}

http_up() { curl -s -o /dev/null -m 1 "http://127.0.0.1:$PORT/status-json.xsl"; }

# The mount is up when /status-json.xsl lists it and a listener gets 200 (curl's -m cuts the
# endless body; -w still reports the status). Either server's status page names the mount in
# its listenurl.
mount_up() {
    curl -s -m 2 "http://127.0.0.1:$PORT/status-json.xsl" 2>/dev/null | grep -q '/live' || return 1
    local code
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$PORT/live" || true)
    [ "$code" = 200 ]
}

start_source() {
    ffmpeg -nostdin -hide_banner -loglevel warning -re -stream_loop -1 -i "$INPUT" \
        -c copy -id3v2_version 0 -write_xing 0 -content_type audio/mpeg \
        -ice_name "onair bench" -f mp3 \
        "icecast://source:$PASSWORD@127.0.0.1:$PORT/live" >"$1/ffmpeg.log" 2>&1 &
    SOURCE_PID=$!
    PIDS+=("$SOURCE_PID")
}

start_title_updates() {
    (
        i=0
        while :; do
            i=$((i + 1))
            curl -s -o /dev/null -m 2 -u "admin:$PASSWORD" \
                "http://127.0.0.1:$PORT/admin/metadata?mount=/live&mode=updinfo&song=Bench+title+$i" || true
            sleep 5
        done
    ) &
    META_PID=$!
    PIDS+=("$META_PID")
}

# run_one SERVER N: one measured run; leaves SERVER-N.json in $RESULTS.
run_one() {
    local server=$1 n=$2 clients logs
    clients=$((n + 200))
    "start_$server" "$clients"
    logs=$(server_logs "$server")
    wait_until 20 "$server to answer HTTP" http_up
    start_source "$logs"
    wait_until 30 "the /live mount on $server" mount_up
    if [ "$METADATA" = 1 ]; then start_title_updates; fi
    sleep "$SETTLE"

    local flags=(--url "http://127.0.0.1:$PORT/live" --listeners "$n" --duration "$DURATION"
        --ramp "$RAMP" --server-pid "$SERVER_PID" --nominal-kbps 128
        --bind-ips "$BIND_IPS" --json "$RESULTS/$server-$n.json")
    [ "$METADATA" = 1 ] && flags+=(--metadata)
    log "$server: $n listeners, hold ${DURATION}s"
    # In the background so that a signal to this script runs the cleanup trap at once (bash
    # defers traps while a foreground child runs).
    "$LOADTEST" "${flags[@]}" >"$RESULTS/$server-$n.txt" 2>"$RESULTS/$server-$n.stderr" &
    local load_pid=$!
    PIDS+=("$load_pid")
    if ! wait "$load_pid"; then
        log "warning: load tool failed for $server N=$n (see $RESULTS/$server-$n.stderr)"
    fi
    stop_pid "$load_pid"
    cat "$RESULTS/$server-$n.txt" >&2 || true
    kill -0 "$SERVER_PID" 2>/dev/null || log "warning: $server died during the run"

    [ -n "$META_PID" ] && stop_pid "$META_PID"
    META_PID=
    stop_pid "$SOURCE_PID"
    stop_pid "$SERVER_PID"
    mkdir -p "$RESULTS/logs/$server-$n"
    cp -r "$logs/." "$RESULTS/logs/$server-$n/" 2>/dev/null || true
    sleep 2
}

# ---------------------------------------------------------------- table
# value FILE JQ-EXPR: a number (2 decimals, 4 below 1), a string, or "-".
value() {
    [ -s "$1" ] || {
        echo -
        return
    }
    jq -r "($2) as \$v | if \$v == null then \"-\"
        elif (\$v | type) == \"number\" then
            (if (\$v < 1 and \$v > -1) then (\$v * 10000 | round / 10000)
             else (\$v * 100 | round / 100) end | tostring)
        else (\$v | tostring) end" "$1" 2>/dev/null || echo -
}

ROWS=(
    "listeners requested|.listeners_requested"
    "connected (200)|.connected"
    "held to end|.held_to_end"
    "failures|.failures_total"
    "failure categories|(.failures | to_entries | map(\"\(.key): \(.value)\") | join(\", \")) as \$s | if \$s == \"\" then null else \$s end"
    "stalled listeners|.stalled_listeners"
    "stall events|.stall_events"
    "ramp s|.ramp_s"
    "settle s|.settle_s"
    "hold s|.hold_s"
    "TTFB p50 ms|.ttfb_ms.p50"
    "TTFB p90 ms|.ttfb_ms.p90"
    "TTFB p99 ms|.ttfb_ms.p99"
    "TTFB max ms|.ttfb_ms.max"
    "bitrate min kbit/s|.bitrate_kbps.min"
    "bitrate p50 kbit/s|.bitrate_kbps.p50"
    "bitrate mean kbit/s|.bitrate_kbps.mean"
    "bitrate mean % of nominal|.bitrate_mean_pct_of_nominal"
    "server CPU s (hold window)|.server.cpu_s"
    "server CPU user s|.server.cpu_user_s"
    "server CPU system s|.server.cpu_system_s"
    "server CPU s per 1000 listener-s|.server.cpu_s_per_1000_listener_s"
    "server RSS start MiB|.server.rss_start_mib"
    "server RSS peak MiB|.server.rss_peak_mib"
    "server RSS per 1000 listeners MiB|.server.rss_per_1000_listeners_mib"
    "server VmHWM MiB|.server.vm_hwm_mib"
    "load tool CPU s|.loadtest_cpu_s"
    "load tool peak RSS MiB|.loadtest_vm_hwm_mib"
)
META_ROWS=(
    "metadata blocks (whole run)|.meta.blocks"
    "metadata blocks non-empty (whole run)|.meta.non_empty"
    "metadata parse errors|.meta.parse_errors"
    "responses without icy-metaint|.meta.missing_metaint"
)

table() { # N [requested N]
    local n=$1 requested=$2 row label expr a b ratio
    local ice="$RESULTS/icecast2-$n.json" onair="$RESULTS/onair-$n.json"
    local rows=("${ROWS[@]}")
    [ "$METADATA" = 1 ] && rows+=("${META_ROWS[@]}")
    echo
    if [ "$n" = "$requested" ]; then
        echo "### $n listeners (metadata: $([ "$METADATA" = 1 ] && echo on || echo off), hold ${DURATION} s)"
    else
        echo "### $n listeners (asked for $requested; capped by the open-file limit) (metadata: $([ "$METADATA" = 1 ] && echo on || echo off), hold ${DURATION} s)"
    fi
    echo
    echo "| metric | icecast2 | onair | onair/icecast2 |"
    echo "|---|---:|---:|---:|"
    for row in "${rows[@]}"; do
        label=${row%%|*}
        expr=${row#*|}
        a=$(value "$ice" "$expr")
        b=$(value "$onair" "$expr")
        ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {
            if (a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && a + 0 != 0) {
                r = b / a; printf (r >= 0.1 || r <= -0.1 || r == 0) ? "%.2f" : "%.3g", r
            } else printf "-" }')
        echo "| $label | ${a//|/\\|} | ${b//|/\\|} | $ratio |"
    done
}

{
    echo "## Listener benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "- servers: $SERVERS; icecast2: $(icecast2 -v 2>/dev/null | head -1 || echo n/a)"
    echo "- source: ffmpeg -re, MP3 128 kbit/s CBR 44.1 kHz stereo; metadata: $([ "$METADATA" = 1 ] && echo "on (title every 5 s)" || echo off)"
    echo "- load: ramp $RAMP/s, hold ${DURATION} s, bind IPs $BIND_IPS, open-file limit $NOFILE"
} >"$RESULTS/table.md"

for requested in "${COUNTS[@]}"; do
    n=$requested
    if [ "$CAP_TO_NOFILE" = 1 ] && [ $((n + 200)) -gt "$NOFILE" ]; then
        n=$((NOFILE - 200))
        log "warning: N=$requested does not fit the open-file limit $NOFILE; running N=$n"
    fi
    for server in $SERVERS; do
        run_one "$server" "$n"
    done
    table "$n" "$requested" | tee -a "$RESULTS/table.md"
done

log "done: $RESULTS/table.md"
