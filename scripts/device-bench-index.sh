#!/bin/sh
# device-bench-index.sh — the whole of one device call for `scripts/bench-index --gpu`: it
# exists because that machine has no compiler and no network, so everything arrives packed
# and this is the one fixed sequence that unpacks it and runs the benchmark there.
#
# Here, from the repository root (a build of the commit to measure; ../shared beside it):
#   [ -f .dev/minilm-f16/model.safetensors ] || scripts/convert-f16 .cache/models/all-MiniLM-L6-v2 .dev/minilm-f16
#   DEV_DIR=.dev/bench13 scripts/pack-device tool_vk_bench indexer
#   xz -9 -c ../shared/data/scifact/corpus.jsonl > .dev/bench13/scifact-corpus.jsonl.xz
# then one run call (about 51 MB carried: the pack 3.6 MB, the corpus 1.9 MB, the model 45 MB):
#   run  carry: .dev/bench13/dev.tar.xz .dev/bench13/scifact-corpus.jsonl.xz .dev/minilm-f16
#        command: sh scripts/device-bench-index.sh
# and, for the memory run at 1,036,600 documents, a second call with the same carry:
#        command: sh scripts/device-bench-index.sh --steps truncate,million --million-copies 200 --budget 560
# The report is printed and written to $OUT/bench-index-gpu.md, each step's log to
# $OUT/bench-index-gpu-logs/. Arguments go to scripts/bench-index-gpu (after `--`: options
# for every indexer run). DEV_DIR, MODEL and CORPUS override the carried paths; BENCH_ICD
# the Vulkan driver manifest (a dry run here: /usr/share/vulkan/icd.d/lvp_icd.x86_64.json).
set -eu
cd "$(dirname "$0")/.."
D=${DEV_DIR:-.dev/bench13}
MODEL=${MODEL:-.dev/minilm-f16}
CORPUS=${CORPUS:-$D/scifact-corpus.jsonl.xz}
for f in "$D/dev.tar.xz" "$MODEL/model.safetensors" "$CORPUS"; do
	[ -f "$f" ] || { echo "device-bench-index: $f is missing (not carried?)" >&2; exit 1; }
done
tar xJf "$D/dev.tar.xz" -C "$D"
export VK_ICD_FILENAMES="${BENCH_ICD:-$PWD/$D/bin/nvidia_icd.json}"
export LD_LIBRARY_PATH="$PWD/$D/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
exec python3 scripts/bench-index-gpu --bin "$D/bin" --model "$MODEL" --corpus "$CORPUS" "$@"
