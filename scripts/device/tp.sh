#!/bin/bash
# tp.sh - issue 21 on one GPU (after scripts/device/pack.sh build-cuda llava-bench
# test_tp llava-eval llava-quantize): tensor parallelism through NCCL (1 rank) and
# through one-device staged sums (2, 4 ranks).
set -u
N=$(python3 -c "import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],'lib','libnccl.so.2'))" 2>/dev/null)
export LLAVA_NCCL=$N
tar -C .device -xJf .device/pack.tar.xz
export LD_LIBRARY_PATH=$PWD/.device/lib LLAVA_TEST_DATA=$PWD/tests/data LLAVA_TEST_ASSETS=$PWD/tests/assets LLAVA_BIN_DIR=$PWD/.device/bin LLAVA_TMP=/tmp/lt
mkdir -p /tmp/lt "$OUT"
B=.device/bin
nvidia-smi -L
echo "== test_tp on cuda"
LLAVA_TEST_DEVICE=cuda $B/test_tp 2>&1 | grep -E 'rank|OK|FAIL|ERROR'
echo "== demo held-out, cuda: none, 1 rank (NCCL), 2 ranks (one device, staged)"
D=models/demo/heldout
for tp in 0 1 2; do
  if [ $tp = 2 ]; then export LLAVA_TP_ONE_DEVICE=1; fi
  $B/llava-eval --model models/demo --questions $D/questions.json --annotations $D/annotations.json --images $D/images --device cuda --parallel 8 --tensor-parallel $tp --report $OUT/eval_tp$tp.json > $OUT/eval_tp$tp.log 2>&1
  unset LLAVA_TP_ONE_DEVICE
  tail -1 $OUT/eval_tp$tp.log
done
python3 - <<'PY'
import json,os
o=os.environ['OUT']; R={t:json.load(open(f'{o}/eval_tp{t}.json')) for t in (0,1,2)}
a={q['question_id']:q['prediction'] for q in R[0]['questions']}
for t in (1,2):
    b={q['question_id']:q['prediction'] for q in R[t]['questions']}
    print('tp',t,'same predictions',sum(a[k]==b[k] for k in a),'of',len(a),'accuracy',R[t]['accuracy']['overall'],'wall',round(R[t]['wall_s'],1))
PY
echo "== 7B-shaped random Q4_0: decode and prefill, no TP vs 1 rank (alternating)"
M=/tmp/m7
$B/llava-quantize --random --preset llava-v1.6-mistral-7b --format gguf-q4_0 --tokenizer $B/tokenizer.json --out $M > $OUT/quantize.log 2>&1 || tail -3 $OUT/quantize.log
for i in 1 2; do for tp in 0 1; do
  echo "-- tp $tp"; $B/llava-bench model --model $M/text.gguf --mmproj $M/mmproj.gguf --device cuda --tg 128 --pp 512 --repeat 3 --tensor-parallel $tp 2>&1 | grep -E 't/s'
done; done
