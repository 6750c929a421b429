#!/usr/bin/env bash
# bench/transcode.sh — CPU cost of live transcoding: one real-time MP3 source on /live,
# re-encoded by onair into three extra mounts (MP3 64k, MP3 96k, Opus 64k), against ffmpeg
# doing the same job (decode the same MP3 in real time, encode the same three outputs).
#
# Rounds alternate (onair without transcoders, onair with them, ffmpeg) so load from other
# processes on a shared machine hits all alike. CPU is user+system time of the server (or
# ffmpeg) process from /proc/PID/stat over each measuring window, in % of one core.
#
#   bash bench/transcode.sh            # 3 rounds x 30 s
#   ROUNDS=1 DURATION=10 bash bench/transcode.sh
# Needs: a release build (cargo build --release -p onair), ffmpeg with libmp3lame/libopus.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
PORT=${PORT:-18600}
ONAIR=${ONAIR_BIN:-${CARGO_TARGET_DIR:-target}/release/onair}
WORK=$(mktemp -d /tmp/onair-bench-transcode.XXXXXX)
PASSWORD=benchpw
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
die() { echo "error: $*" >&2; exit 1; }
[ -x "$ONAIR" ] || die "$ONAIR not built (cargo build --release -p onair)"
command -v ffmpeg >/dev/null || die "ffmpeg is required"

INPUT=/tmp/onair-bench-input/transcode-120s.mp3
if [ ! -s "$INPUT" ]; then
    mkdir -p "$(dirname "$INPUT")"
    # Music-like: two tones changing every second, plus a little noise; stereo 44.1 kHz.
    expr="0.3*sin(2*PI*(330+110*floor(mod(t\,4)))*t)+0.2*sin(2*PI*550*t)+0.02*(random(0)-0.5)"
    ffmpeg -v error -y -f lavfi -i "aevalsrc=${expr}|${expr}:s=44100:d=120" \
        -c:a libmp3lame -b:a 128k "$INPUT"
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# measure PID -> prints CPU % of one core over DURATION after WARMUP
measure() {
    sleep "$WARMUP"
    local a b
    a=$(ticks "$1")
    sleep "$DURATION"
    b=$(ticks "$1")
    awk -v d=$((b - a)) -v hz="$HZ" -v s="$DURATION" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}

write_config() { # with_transcoders -> config file
    local f="$WORK/onair-$1.toml"
    printf '[demo]\nenabled = false\n[[mount]]\nname = "/live"\n' >"$f"
    if [ "$1" = yes ]; then
        cat >>"$f" <<'TOML'
[[mount]]
name = "/t64.mp3"
transcode_from = "/live"
bitrate = 64
[[mount]]
name = "/t96.mp3"
transcode_from = "/live"
bitrate = 96
[[mount]]
name = "/t.opus"
transcode_from = "/live"
codec = "opus"
bitrate = 64
sample_rate = 48000
TOML
    fi
    echo "$f"
}

run_onair() { # with_transcoders -> CPU %
    local cfg; cfg=$(write_config "$1")
    "$ONAIR" serve --bind "127.0.0.1:$PORT" --source-password "$PASSWORD" --admin-password "$PASSWORD" \
        --config "$cfg" >"$WORK/onair-$1.log" 2>&1 &
    local srv=$!; PIDS+=("$srv")
    sleep 0.5
    ffmpeg -v error -re -stream_loop -1 -i "$INPUT" -c copy -content_type audio/mpeg -f mp3 \
        "icecast://source:$PASSWORD@127.0.0.1:$PORT/live" </dev/null &
    local src=$!; PIDS+=("$src")
    local cpu; cpu=$(measure "$srv")
    if [ "$1" = yes ]; then
        # The transcoded mounts must really be live (and ffmpeg must decode them).
        for m in /t64.mp3 /t96.mp3 /t.opus; do
            curl -s -m 3 "http://127.0.0.1:$PORT$m" -o "$WORK/check" || true
            [ -s "$WORK/check" ] || die "transcoded mount $m is not live"
        done
    fi
    kill "$src" "$srv"; wait "$src" "$srv" 2>/dev/null || true
    echo "$cpu"
}

run_ffmpeg() { # -> CPU %
    ffmpeg -v error -y -re -stream_loop -1 -i "$INPUT" \
        -map 0:a -c:a libmp3lame -b:a 64k -f mp3 /dev/null \
        -map 0:a -c:a libmp3lame -b:a 96k -f mp3 /dev/null \
        -map 0:a -ar 48000 -c:a libopus -b:a 64k -f ogg /dev/null </dev/null &
    local p=$!; PIDS+=("$p")
    local cpu; cpu=$(measure "$p")
    kill "$p"; wait "$p" 2>/dev/null || true
    echo "$cpu"
}

echo "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s onair=$ONAIR input=$INPUT"
printf '| round | onair, source only | onair, + 3 transcoded mounts | transcoding cost | ffmpeg, same 3 encodes |\n'
printf '|---|---|---|---|---|\n'
sum_base=0; sum_with=0; sum_ff=0
for r in $(seq "$ROUNDS"); do
    base=$(run_onair no)
    with=$(run_onair yes)
    ff=$(run_ffmpeg)
    cost=$(awk -v a="$with" -v b="$base" 'BEGIN { printf "%.2f", a - b }')
    printf '| %d | %s %% | %s %% | %s %% | %s %% |\n' "$r" "$base" "$with" "$cost" "$ff"
    sum_base=$(awk -v s="$sum_base" -v x="$base" 'BEGIN { print s + x }')
    sum_with=$(awk -v s="$sum_with" -v x="$with" 'BEGIN { print s + x }')
    sum_ff=$(awk -v s="$sum_ff" -v x="$ff" 'BEGIN { print s + x }')
done
awk -v b="$sum_base" -v w="$sum_with" -v f="$sum_ff" -v n="$ROUNDS" 'BEGIN {
    printf "| mean | %.2f %% | %.2f %% | %.2f %% | %.2f %% |\n", b / n, w / n, (w - b) / n, f / n
    printf "\nonair transcoding cost / ffmpeg: %.2f\n", (w - b) / f
}'
