#!/usr/bin/env bash
# A PulseAudio daemon whose only sound card is a null sink, so the PyAudio tests have a real,
# real-time-paced device on machines without /dev/snd (CI, containers).
#
#   eval "$(.ci/pulseaudio.sh)"          # start (or find) it, then use it from this shell
#   .ci/pulseaudio.sh --stop [DIR]       # stop it
#
# The sink is 16 kHz mono ("vsink"), Earshot's rate, so nothing is resampled. Its monitor
# ("vsink.monitor") is the default source: a microphone hears what is played to the sink.
# Idempotent: a daemon already answering in DIR is reused. It exports nothing itself; it
# prints the variables a client needs (PULSE_SERVER is enough for libpulse and for ALSA's
# pulse plugin, which PortAudio's "default" device goes through).
set -euo pipefail

stop=0
if [[ "${1:-}" == "--stop" ]]; then stop=1; shift; fi
dir="${1:-${EARSHOT_PULSE_DIR:-/tmp/earshot-pulse-$(id -u)}}"
socket="$dir/native"
# The daemon keeps its state in HOME and XDG_RUNTIME_DIR; both go in DIR (mode 700, or it refuses).
daemon_env=(env HOME="$dir/home" XDG_RUNTIME_DIR="$dir/runtime" PULSE_SERVER="unix:$socket")

alive() { "${daemon_env[@]}" pactl info >/dev/null 2>&1; }

if (( stop )); then
  if alive; then "${daemon_env[@]}" pulseaudio --kill 2>/dev/null || true; fi
  for _ in $(seq 50); do alive || break; sleep 0.1; done
  exit 0
fi

for tool in pulseaudio pactl; do
  command -v "$tool" >/dev/null || {
    echo "pulseaudio.sh: '$tool' not found: apt-get install pulseaudio pulseaudio-utils libasound2-plugins" >&2
    exit 1
  }
done

if ! alive; then
  mkdir -p "$dir/home" "$dir/runtime"
  chmod 700 "$dir" "$dir/home" "$dir/runtime"
  rm -f "$socket"
  # -n: no default.pa (it would probe for real cards); exit-idle-time -1: never quit when idle.
  "${daemon_env[@]}" pulseaudio -n --daemonize=yes --use-pid-file=yes --exit-idle-time=-1 \
    --log-target=file:"$dir/pulseaudio.log" \
    -L "module-native-protocol-unix auth-anonymous=1 socket=$socket" \
    -L "module-null-sink sink_name=vsink rate=16000 channels=1" \
    -L module-always-sink
  for _ in $(seq 100); do alive && break; sleep 0.05; done
  if ! alive; then
    echo "pulseaudio.sh: the daemon did not come up; its log ($dir/pulseaudio.log):" >&2
    tail -n 20 "$dir/pulseaudio.log" >&2 || true
    exit 1
  fi
  "${daemon_env[@]}" pactl set-default-sink vsink
  "${daemon_env[@]}" pactl set-default-source vsink.monitor
fi

echo "export PULSE_SERVER=unix:$socket"
