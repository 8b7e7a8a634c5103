#!/usr/bin/env bash
# One short GPU lease, prepared to run once (see engines/README.md "GPU figures"):
#   0. the tests that run only on a CUDA machine (torch CUDA parity, cuda-bindings),
#   1. the engine latency table on the GPU (torch FP32 / FP16 / FP16 + CUDA graph, batch 1 and 8),
#      each row with its largest output difference from ONNX Runtime FP32 on the CPU,
#   2. the separator trained side by side: AV with SI-SDR loss, AV with the spectral loss, and the
#      audio-only PIT baseline, same size and time box, from the pack written here by
#      `python launch.py train-separator --write-pack out/separation/units.npz --minutes 0`,
#   3. the separator rows of the table at the trained size.
# Usage on the GPU machine:  OUT=<dir> MINUTES=6.5 bash benchmarks/gpu_session.sh
# SEPARATOR=0 stops after step 1 (no pack needed): the localizer and test figures alone, ~3 min.
set -u
OUT=${OUT:-out/gpu}
MINUTES=${MINUTES:-6.5}
RUNS=${RUNS:-/tmp/earshot-runs}
PACK=${PACK:-out/separation/units.npz}
PY=${PY:-python3}
BENCH=${BENCH:-benchmarks/engines.py}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$RUNS/nvidia-smi.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" >> "$RUNS/nvidia-smi.txt" 2>&1

echo "== CUDA-only tests $(date +%T)"
$PY -m pytest -q -rs -p no:cacheprovider tests/test_engines.py tests/test_engines_tensorrt.py 2>&1 | tee "$OUT/pytest-gpu.txt" | tail -6

echo "== engines (without the separators) $(date +%T)"
timeout 120 $PY "$BENCH" --models localizer_visual localizer_audio localizer_fusion centerface tiny_conv_test \
    --variants torch-fp32 torch-fp16 torch-fp16-graph onnxruntime --iters 100 --warmup 10 2>"$RUNS/engines.err" | tee "$OUT/engines-gpu.md"

if [ "${SEPARATOR:-1}" = 0 ]; then cp "$RUNS/nvidia-smi.txt" "$RUNS/engines.err" "$OUT/" 2>/dev/null; echo "== done $(date +%T)"; exit 0; fi

echo "== separator training, $MINUTES min each, side by side $(date +%T)"
common=(--pack "$PACK" --device "$DEVICE" --batch-size "${BATCH:-32}" --crop-seconds 1.5 --features magnitude --identity-init
        --hidden 384 --audio-dim 256 --lr 1e-3 --save-every 200 --loader-threads 4 --threads 2
        --out-dir "$RUNS" --minutes "$MINUTES")
$PY -m lab.separation.train_separator --mode av --loss sisdr --run-name av-sisdr "${common[@]}" > "$RUNS/av-sisdr.log" 2>&1 &
$PY -m lab.separation.train_separator --mode av --loss spectral --run-name av-spectral "${common[@]}" > "$RUNS/av-spectral.log" 2>&1 &
$PY -m lab.separation.train_separator --mode audio-only --loss spectral --run-name audio-only "${common[@]}" > "$RUNS/audio-only.log" 2>&1 &
wait
for name in av-sisdr av-spectral audio-only; do
    grep -v "it/s\]\|s/it\]" "$RUNS/$name.log" | tail -3
    tail -2 "$RUNS/$name-curve.csv"
    cp "$RUNS/$name-weights.pt" "$OUT/" 2>/dev/null
done

echo "== separator engines at the trained size $(date +%T)"
cp "$RUNS/av-sisdr-weights.pt" engines/weights/separator.pt && cp "$RUNS/audio-only-weights.pt" engines/weights/separator_audio_only.pt &&
timeout 90 $PY "$BENCH" --models separator separator_audio_only \
    --variants torch-fp32 torch-fp16 torch-fp16-graph --iters 100 --warmup 10 2>>"$RUNS/engines.err" | tee "$OUT/engines-gpu-separator.md"
tail -5 "$RUNS/engines.err"
tar czf "$OUT/runs.tgz" -C "$RUNS" --exclude '*.pt' .
echo "== done $(date +%T)"
