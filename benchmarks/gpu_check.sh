#!/usr/bin/env bash
# Every GPU figure docs/performance.md asks for, in one go (a few minutes on one modern GPU):
#   bash benchmarks/gpu_check.sh --data-dir ../shared/data           # prints the figures; paste them into the doc
#   bash benchmarks/gpu_check.sh --data-dir DIR --dry-run            # one tiny step of each, on any machine (CI)
# 1. MNIST time to 99 % (LeNet-5 recipe + configs/gpu.yaml: bf16, channels_last), litlab vs a plain loop;
# 2. CIFAR-10 time to 90 / 94 % with the fast recipe at airbench's size (fast_cnn_cifar10_gpu.yaml), litlab vs plain;
# 3. the same CIFAR-10 run (litlab only) in fp32, and with torch.compile — what bf16 and compile buy;
# 4. per-step overhead ratios (MLP [128, 64], LeNet-5) and Python calls per step;
# 5. DivergenceGuard makes no device sync between its reads (tests/test_divergence_sync.py -k cuda).
# Every clock read waits for the GPU first (benchmarks/_clock.py). The header of each part prints the device.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${LITLAB_DATA:-../shared/data}
dry=0
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) data=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n "2,10p" "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python}
tta=(--data-dir "$data" --out "${OUT:-runs}/gpu_check")
ovh=(--data-dir "$data" --out "${OUT:-runs}/gpu_check" --repeats 5)
tiny=()
if [ "$dry" = 1 ]; then  # prove every command still runs: one short epoch each, whatever the accuracy
  tiny=(--data.val_size 40 --data.train_size 32 --trainer.max_epochs 1)
  ovh=(--data-dir "$data" --out "${OUT:-runs}/gpu_check" --repeats 1 --train-size 32 --no-stock --extra --data.val_size 40)
fi
gpu=configs/fast_cnn_cifar10_gpu.yaml
"$py" -c "import torch; print('# device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU (no CUDA)')"

echo "## 1. MNIST, LeNet-5 to 99 %"
"$py" benchmarks/time_to_accuracy.py "${tta[@]}" --recipes cnn --extra --config configs/gpu.yaml ${tiny[@]+"${tiny[@]}"}
echo "## 2. CIFAR-10, FastCNN (64, 256, 256) to 90 / 94 %, bf16"
"$py" benchmarks/time_to_accuracy.py "${tta[@]}" --recipes cifar10 --targets 0.90 0.94 --extra --config "$gpu" \
  ${tiny[@]+"${tiny[@]}"}
echo "## 3. the same, litlab only: fp32; bf16 + torch.compile"
"$py" benchmarks/time_to_accuracy.py "${tta[@]}" --recipes cifar10 --targets 0.90 0.94 --litlab-only --extra \
  --config "$gpu" --trainer.precision 32-true ${tiny[@]+"${tiny[@]}"}
"$py" benchmarks/time_to_accuracy.py "${tta[@]}" --recipes cifar10 --targets 0.90 0.94 --litlab-only --extra \
  --config "$gpu" --trainer.callbacks+=callbacks.Accelerate --trainer.callbacks.compile true ${tiny[@]+"${tiny[@]}"}
echo "## 4. per-step overhead"
"$py" benchmarks/epoch_overhead.py --nets mlp_128_64 lenet5 "${ovh[@]}"
echo "## 5. DivergenceGuard: no device sync between its reads (CUDA only; skipped elsewhere)"
if [ "$dry" = 0 ]; then "$py" -m pytest -q -p no:cacheprovider tests/test_divergence_sync.py -k cuda; fi
