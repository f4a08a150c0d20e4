#!/usr/bin/env bash
# The GPU checks for a lent machine, in one call: tests marked gpu, the staircase of one conv
# and the latency-model benchmark on torch-cuda (tables with a call's overhead taken out and
# kept, on the same plans). Results go to $OUT (default ./gpu-results).
# Every step has its own time limit so that a slow one leaves the others' results.
#   bash benchmarks/gpu_session.sh            # on the GPU machine, from the repo root
#   BACKEND=torch-cpu SMALL=1 bash benchmarks/gpu_session.sh   # a quick rehearsal on a CPU
set -u
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
BACKEND=${BACKEND:-torch-cuda}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -n "${SMALL:-}" ]; then RES=32 BATCH=2 GS18=64 GS50=64 PLANS=3 OUTCH=32; else
  RES=224 BATCH=32 GS18=32 GS50=64 PLANS=10 OUTCH=512; fi
log() { echo "== $* ($(date +%T))"; }
{
  log machine; nvidia-smi -L 2>&1; $PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
  if [ "$BACKEND" = torch-cuda ]; then
    log gpu tests; timeout ${TEST_LIMIT:-170} $PY -m pytest -m gpu -q -rs -p no:cacheprovider ${GPU_TESTS:-tests}
  fi
  for prec in fp16 fp32; do
    log staircase $prec; timeout 60 $PY benchmarks/staircase.py --backend "$BACKEND" \
      --precision $prec --channels-last --batch $BATCH --in 256 --out $OUTCH --step 8 --hw 14 \
      --png "$OUT/staircase_$prec.png" --json "$OUT/staircase_$prec.json"
  done
  rm -f "$OUT/staircase_fp32.png"
  for spec in ${LM_SPECS:-resnet18:$GS18:150 resnet50:$GS50:200}; do
    IFS=: read -r arch gs limit <<<"$spec"
    log latency model $arch gs $gs; timeout "$limit" $PY benchmarks/latency_model.py \
      --backend "$BACKEND" --archs "$arch" --threads 1 --precision fp16 --channels-last \
      --batch $BATCH --resolution $RES --group-size "$gs" --plans $PLANS --passes 2 \
      --model-seconds 1 --cell-seconds 0.02 --call-overhead both --out "/tmp/lm_$arch" --png "$OUT/lm_$arch.png" \
      && cp "/tmp/lm_$arch/latency_model.json" "$OUT/lm_$arch.json"
  done
  log done
} 2>&1 | tee "$OUT/run.log"
