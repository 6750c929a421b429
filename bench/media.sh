#!/usr/bin/env bash
# bench/media.sh — onair-media's decode, loudness, limiter and demo synth, each next to
# ffmpeg doing the same job on the same audio in the same run.
#
# Usage:  bash bench/media.sh [SECONDS]      (default 300: length of the test programme)
#
# Renders SECONDS of the demo programme (seed 1, 44.1 kHz stereo) with the `demo` example,
# encodes it with ffmpeg to MP3 (128k CBR), AAC (ADTS, 128k), FLAC and Ogg Vorbis (q4),
# then for each file times `decode` (our decode, R128 meter, limiter at +gain) against
# `ffmpeg -threads 1` decoding to null, measuring with the ebur128 filter, and limiting with
# alimiter. The synth is compared with ffmpeg encoding the rendered WAV to MP3 (the next
# stage on /stream). Wall-clock seconds, best of 3 on both sides (ffmpeg decode rows include its start-up;
# meter and limiter rows are ffmpeg's whole run minus its decode-only run).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p onair-media --examples
bin=$CARGO_TARGET_DIR/release/examples

best() { # best wall time of 3 runs of "$@", seconds
  local b=999999 t
  for _ in 1 2 3; do
    local s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t=$(echo "$(date +%s.%N) - $s" | bc -l)
    b=$(echo "if ($t < $b) $t else $b" | bc -l)
  done
  printf '%.3f' "$b"
}
ff() { ffmpeg -hide_banner -nostdin -loglevel error -threads 1 "$@"; }

synth=$(best "$bin/demo" "$work/demo.wav" "$secs" 1 44100)
"$bin/demo" "$work/demo.wav" "$secs" 1 44100 2>/dev/null
lame=$(best ff -y -i "$work/demo.wav" -c:a libmp3lame -b:a 128k "$work/enc.mp3")
echo "| job | onair-media s | ffmpeg s | onair x real time | ffmpeg x real time |"
echo "|---|---:|---:|---:|---:|"
printf '| demo synth %ss vs MP3 encode of it | %s | %s | %.0f | %.0f |\n' "$secs" "$synth" "$lame" \
  "$(echo "$secs / $synth" | bc -l)" "$(echo "$secs / $lame" | bc -l)"

ff -y -i "$work/demo.wav" -c:a libmp3lame -b:a 128k "$work/t.mp3"
ff -y -i "$work/demo.wav" -c:a aac -b:a 128k -f adts "$work/t.aac"
ff -y -i "$work/demo.wav" -c:a flac "$work/t.flac"
ff -y -i "$work/demo.wav" -c:a libvorbis -q:a 4 "$work/t.ogg"
for f in t.mp3 t.aac t.flac t.ogg; do
  # Our figures: each stage's best of 3 runs of the example.
  out=$(for _ in 1 2 3; do "$bin/decode" "$work/$f"; done)
  dec=$(echo "$out" | awk '/^decode/ {print $2}' | sort -n | head -1)
  met=$(echo "$out" | awk '/^meter/ {print $2}' | sort -n | head -1)
  lim=$(echo "$out" | awk '/^limit/ {print $2}' | sort -n | head -1)
  ffdec=$(best ff -i "$work/$f" -f null -)
  printf '| decode %s | %s | %s | %.0f | %.0f |\n' "$f" "$dec" "$ffdec" \
    "$(echo "$secs / $dec" | bc -l)" "$(echo "$secs / $ffdec" | bc -l)"
  if [ "$f" = t.flac ]; then
    # ffmpeg's filter cost alone: the whole run minus the decode-only run.
    ffmet=$(best ff -i "$work/$f" -af ebur128=peak=true -f null -)
    ffmet=$(printf '%.3f' "$(echo "$ffmet - $ffdec" | bc -l)")
    fflim=$(best ff -i "$work/$f" -af volume=3dB,alimiter=limit=0.89:level=disabled -f null -)
    fflim=$(printf '%.3f' "$(echo "$fflim - $ffdec" | bc -l)")
    printf '| R128 meter (+true peak), from %s | %s | %s | %.0f | %.0f |\n' "$f" "$met" "$ffmet" \
      "$(echo "$secs / $met" | bc -l)" "$(echo "$secs / $ffmet" | bc -l)"
    printf '| limiter (gain + -1 dBTP ceiling), from %s | %s | %s | %.0f | %.0f |\n' "$f" "$lim" "$fflim" \
      "$(echo "$secs / $lim" | bc -l)" "$(echo "$secs / $fflim" | bc -l)"
  fi
done
