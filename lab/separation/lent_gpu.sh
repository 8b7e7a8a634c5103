#!/usr/bin/env bash
# One lent GPU for a few minutes: three audio-only separators trained side by side from the speech pack, their runs
# tarred into $OUT. Run from the repository root on the lent machine (the `device` tool), carrying the pack and
# the soundfile wheels:
#
#   python -m lab.separation.speech_pack out/speech_pack          # here, once
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     soundfile==0.14.0 cffi pycparser                           # the lent machine has no soundfile
#   run: bash lab/separation/lent_gpu.sh    carry: out/speech_pack .whl out/separation/audio_pretrain/g_ft_lo/best.pt
#
# g_ft  : the shipped audio-only CRN trained on, now half on real (VoxCeleb) voices
# g_new : the same network from scratch on the same data
# g_wide: a wider CRN (channels 24,48,64,96, time GRU 96) from scratch — more compute per hop, if it earns it
# g_lo  : session 14's best (g_ft_lo, carried: INIT) trained on, batch 384 (session 16; the default RUNS)
# g_aug : the same + speed perturbation (±10 %) and simulated rooms on half the mixtures
# Session 16 ran g_lo and g_aug: flat (the network is saturated on the pack) and lower with augmentation
# (engines/separation/MODEL_CARD.md): a next lent GPU should bring more speech or a different network, not more steps.
# RUNS picks among them (one run alone had the GPU to itself: 0.13 s per step against 0.4 shared by three);
# PREFIX names the run folders (a local test: DEVICE=cpu WHEELS=0 PREFIX=t_ MINUTES=0.1 BATCH=2 PROFILE=1 PROFILE_BATCHES=2,4 PROFILE_STEPS=2).
# MINUTES is each run's training time (evaluations not counted); the three share the GPU. LIMIT (s) stops a run
# that overstays, so the tars below are always written before the lent machine's own limit.
set -uo pipefail
MINUTES=${MINUTES:-5.5}
LIMIT=${LIMIT:-430}
OUT=${OUT:-out/lent_gpu}
RUNS=${RUNS:-g_lo g_aug}
INIT=${INIT:-out/separation/audio_pretrain/g_ft_lo/best.pt}
PREFIX=${PREFIX:-}
declare -A RECIPE=(
  [g_ft]="--init engines/weights/separator_audio_only.pt --lr 4e-4"
  [g_new]="--lr 1e-3"
  [g_wide]="--channels 24,48,64,96 --time-hidden 96 --lr 1e-3"
  [g_lo]="--init $INIT --lr 2e-4"
  [g_aug]="--init $INIT --lr 2e-4 --speed 0.1 --rooms 0.5"
)
mkdir -p "$OUT"
for run in $RUNS; do  # never train over a run that is already here
  if [ -z "${RECIPE[$run]:-}" ]; then echo "unknown run $run (one of: ${!RECIPE[*]})"; exit 1; fi
  if [ -e "out/separation/audio_pretrain/$PREFIX$run" ]; then
    echo "out/separation/audio_pretrain/$PREFIX$run exists: move it first"; exit 1
  fi
done
if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then  # WHEELS=0 where soundfile is installed already
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null || true
DEVICE=${DEVICE:-cuda}
common=(--pack out/speech_pack --device "$DEVICE" --one-voice 0.25 --eval-minutes "${EVAL_MINUTES:-0.5}"
        --threads 4 --batch-size "${BATCH:-384}" --minutes "$MINUTES")
# PROFILE=1: first, where a step's time goes (session 14's run made only ~740 mixtures/s, one run or three alike)
if [ "${PROFILE:-0}" = 1 ]; then
  timeout 120 python3 -m lab.separation.audio_pretrain --run "${PREFIX}profile" --profile-steps "${PROFILE_STEPS:-10}" \
    --profile-batches "${PROFILE_BATCHES:-96,384}" "${common[@]}" > "$OUT/profile.txt" 2>&1
  grep -E "^batch|per step" "$OUT/profile.txt"
fi
for run in $RUNS; do
  # shellcheck disable=SC2086  # a recipe is words
  timeout "$LIMIT" python3 -m lab.separation.audio_pretrain --run "$PREFIX$run" ${RECIPE[$run]} "${common[@]}" \
    > "$OUT/$PREFIX$run.log" 2>&1 &
done
wait
for run in $RUNS; do
  echo "== $PREFIX$run"; tail -c 600 "$OUT/$PREFIX$run.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -4
  tail -3 "out/separation/audio_pretrain/$PREFIX$run/curve.csv" 2>/dev/null
  tar czf "$OUT/$PREFIX$run.tgz" -C out/separation/audio_pretrain "$PREFIX$run"
done
ls -la "$OUT"
