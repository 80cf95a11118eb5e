#!/bin/bash
# gpu-checks.sh — one device call's worth of GPU checks and rows, for the lent machine (no
# compiler, no network: everything arrives packed). Steps are named on the command line and
# each runs under its own time limit, writing its log to $OUT/NAME.log, so a call cut short
# still returns what ran.
#
# Here, from the repository root (a build of the commit to check):
#   scripts/convert-f16 .cache/models/all-MiniLM-L6-v2 .dev/minilm-f16
#   build/tests/tool_vk_bench tokenize .dev/minilm-f16 ../shared/data/scifact/corpus.jsonl .dev/scifact-ids.bin
#   build/tests/tool_vk_bench tokenize .cache/models/all-mpnet-base-v2 ../shared/data/scifact/corpus.jsonl \
#       .dev/scifact-mpnet-ids.bin                                     (mpnet-bench only)
#   xz -k -9 .dev/scifact-ids.bin .dev/scifact-mpnet-ids.bin          (carried compressed)
#   python3 scripts/bench-rerank --queries 10 --pairs-only && cp build/bench-rerank/pairs.jsonl .dev/pairs.jsonl
#   <python with transformers> dev/int8/calibrate.py .cache/models/all-MiniLM-L6-v2 .dev/scifact-ids.bin \
#       .dev/int8-calib.bin                                            (int8 only)
#   tar cJf .dev/scifact.tar.xz -C ../shared/data scifact                (ndcg only)
#   DEV_DIR=.dev/g scripts/pack-device test_vk_forward test_jina test_vk_mpnet tool_vk_bench tool_rerank_bench rerank
#       (ndcg: also indexer search)
# then one run call, carrying .dev/g/dev.tar.xz .dev/minilm-f16 .dev/scifact-ids.bin.xz and what the
# steps need (.dev/pairs.jsonl, .dev/scifact-mpnet-ids.bin.xz, .dev/int8-calib.bin; the working
# tree and the carried files together under 64 MiB):
#   bash dev/device/gpu-checks.sh minilm-attn jina-diag rerank ...
# Steps:
#   minilm-attn   test_vk_forward on the real MiniLM (f16 copy), attention default / fa / fa16
#   jina-diag     test_jina, jina-small 1..4,096 tokens, EMBED_JINA_DIAG (default attention and
#                 the lane kernel, every short text's cosine): plain, products
#                 without tensor cores (EMBED_VK_GEMM=hh), 64x64 tiles (hs), the shared-memory
#                 LayerNorm (EMBED_VK_LN_TREE=1)
#   jina-test     test_jina as make test runs it, and test_vk_mpnet
#   rerank        GPU rerank latency (fp16, fp32), CPU 16 threads, and scripts/rerank-torch
#   minilm-bench  scripts/bench-gpu on SciFact, MiniLM, batches 1,2,10,100,1000 (PyTorch too)
#   minilm-attn-bench  tool_vk_bench, attention default vs EMBED_VK_ATTN=cm, alternating
#   layout        EMBED_VK_PROFILE=1: the kernels taken and the accumulator layout
#   jina-8192     scripts/bench-gpu --jina-shaped, 2,048 and 8,192 tokens
#   int8-smooth   int8 default (SmoothQuant on the up product) against EMBED_VK_INT8_SMOOTH_UP=0:
#                 accuracy and batch-1000 rows alternated twice, profiles with pipeline
#                 statistics (with the torch step for the ratio)
#   int8-tests    test_vk_forward on the real MiniLM (its int8 cases, "up with outliers" among
#                 them) and test_vk_quant
#   attn-study    study builds of attn_fa.glsl (ATTN_VARIANTS; dev/attn/attn-study.patch) against
#                 this one: profiles, then batch-1000 int8 rows with the accuracy check
#   ndcg-int8     scripts/eval-beir on SciFact, GPU int8 as it comes and with the up product's
#                 outliers, and fp16; their runs in run-*.trec (carry .dev/scifact.tar.xz;
#                 pack indexer and search too)
#   torch         PyTorch alone (scripts/bench-gpu --torch-only), batches 100 and 1000
#   queues        EMBED_VK_QUEUES=2 against 1, int8 and fp16, batches 100 and 1000 (QBATCHES),
#                 alternated QROUNDS times
#   ab            this build against .dev/g-NAME builds (AB_VARIANTS): int8 profiles, then
#                 rows for AB_PREC at AB_BATCHES with the accuracy check, AB_ROUNDS alternations
#   frontier      scripts/bench-gpu --precision int8 with PyTorch, then batch-1000 rows of fp16,
#                 int8, int8 with the up product's outliers and one scale a token, alternated
#   smooth-alpha  SmoothQuant's alpha on the up product (ALPHAS, in hundredths): accuracy,
#                 batch-1000 rows, nDCG@10 (carry .dev/scifact.tar.xz; pack indexer and search)
#   index-queues  the indexer on 20 copies of SciFact, EMBED_VK_QUEUES=2 against 1, int8 and
#                 fp16 (carry .dev/scifact.tar.xz; pack indexer)
#   int8          int8 products: accuracy and batch-1000 rows for several product sets (a c:
#                 with SmoothQuant from .dev/int8-calib.bin, dev/int8/calibrate.py)
#   rerank-st     scripts/bench-rerank on the GPU against CrossEncoder on CUDA (fp16, fp32)
#   mpnet-bench   scripts/bench-gpu --mpnet-shaped (carry .dev/scifact-mpnet-ids.bin)
#   int8-rows     test_vk_forward on the real MiniLM, tool_vk_bench fp16 and int8 alternating
#                 twice (batches 1, 100, 1000), then PyTorch alone (bench-gpu --torch-only)
#   int8-outl     int8 with outlier channels (EMBED_VK_INT8_OUTLIERS=8, 4; the channels from
#                 .dev/int8-calib.bin) alternating twice with plain int8, accuracy on 1,037
#                 texts and rows at batches 1, 100, 1000, the profile, test_vk_quant, PyTorch
#   int8-epi      the int8 epilogue in the accumulators against the staged one
#                 (EMBED_VK_I8_STAGED=1), alternating, plain and with 8 outlier channels (carry
#                 .dev/int8-calib.bin), and test_vk_forward (their vectors must be equal)
#   gemm-i8       tool_vk_gemm --M 245760 on the int8 kernel (gemm_i8_w) and on each
#                 $D/bin/spv/i8_*.spv, twice, one process a spec (pack tool_vk_gemm; SPV
#                 variants, e.g. without the prefetch: printf '#version 450\n#define TILE_M 128\n
#                 #define TILE_N 96\n#define WARPS_M 2\n#define WARPS_N 2\n#define TILES_M 2\n
#                 #define I8_PREFETCH 0\n#include "gemm_i8.glsl"\n' > $D/spv/i8_np.comp &&
#                 glslc --target-env=vulkan1.2 -O -Ishaders -o $D/spv/i8_np.spv $D/spv/i8_np.comp,
#                 before pack-device, which copies $D/spv)
#   ndcg          scripts/eval-beir on SciFact (carry .dev/scifact.tar.xz) with the f16 MiniLM:
#                 documents on the CPU in fp32 (16 threads), on the GPU in fp16 and in int8
#                 with the product sets of the int8 step and all four with 8 outlier channels
#                 (15o); queries on the CPU in fp32
set -u
cd "$(dirname "$0")/../.."
D=${DEV_DIR:-.dev/g}
# Logs go to $OUT/w and are packed into $OUT/logs.tar.gz at the end (a device call returns
# only a few files).
OUT=${OUT:-/tmp/gpu-checks-out}
RES=$OUT
OUT=$RES/w
mkdir -p "$OUT"
trap 'tar czf "$RES/logs.tar.gz" -C "$OUT" . ; cp "$OUT/steps.log" "$RES/" 2>/dev/null' EXIT
[ -x $D/bin/tool_vk_bench ] || tar xJf $D/dev.tar.xz -C $D
export VK_ICD_FILENAMES=${GPU_ICD:-$PWD/$D/bin/nvidia_icd.json} LD_LIBRARY_PATH=$PWD/$D/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
B=$D/bin
for f in .dev/*.bin.xz; do [ -f "${f%.xz}" ] || xz -dk "$f"; done  # ids carried compressed
M=.dev/minilm-f16
IDS=.dev/scifact-ids.bin
# Steps stop being started, and a running one is cut, DEADLINE seconds after the start (the
# call's own limit should be a little longer, so that the logs are still packed).
T_END=$(( $(date +%s) + ${DEADLINE:-570} ))
# The cross-encoder for the rerank steps: ms-marco-MiniLM-L-6-v2's shapes on the carried f16
# MiniLM (scripts/gen-cross-encoder), made once a machine.
R=/tmp/ce16
ce16() { [ -f $R/model.safetensors ] || python3 scripts/gen-cross-encoder $R --from $M > /dev/null; }
step() { # NAME LIMIT_S CMD...
	local name=$1 lim=$2; shift 2
	local t0=$(date +%s)
	local left=$(( T_END - t0 ))
	if [ $left -lt 15 ]; then echo "=== $name: skipped (deadline)" | tee -a "$OUT/steps.log"; return; fi
	[ $lim -le $left ] || lim=$left
	echo "=== $name: $*" | tee -a "$OUT/steps.log"
	timeout "$lim" "$@" > "$OUT/$name.log" 2>&1
	local rc=$?
	echo "=== $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.log"
	tail -n ${TAILN:-12} "$OUT/$name.log"
}
# This build against others (.dev/g-NAME, carried as .dev/g-NAME/dev.tar.xz): int8 profiles,
# then rows with the accuracy check, alternated ROUNDS times.  ab_rows VARIANTS ROUNDS PRECS BATCHES
ab_rows() {
	local v r p bb
	for v in $1; do
		[ -x .dev/g-$v/bin/tool_vk_bench ] || tar xJf .dev/g-$v/dev.tar.xz -C .dev/g-$v
	done
	for v in base $1; do
		bb=$B; [ $v = base ] || bb=.dev/g-$v/bin
		TAILN=40 EMBED_VK_PROFILE=1 step ab-prof-$v 40 $bb/tool_vk_bench run $M $IDS --no-cpu \
			--batches 1000 --max-batches 3 --precision int8
	done
	for r in $(seq $2); do
		for p in $3; do
			for v in base $1; do
				bb=$B; [ $v = base ] || bb=.dev/g-$v/bin
				step ab-$v-$p-$r 60 $bb/tool_vk_bench run $M $IDS --no-cpu --batches $4 \
					--check-every 5 --precision $p
			done
		done
	done
}
# SciFact unpacked from the carried .dev/scifact.tar.xz, and $ev: eval-beir's command on it
scifact() {
	[ -d .dev/scifact ] || tar xJf .dev/scifact.tar.xz -C .dev
	ev="python3 scripts/eval-beir .dev/scifact --bin $B --model $M --threads 16"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
for s in "$@"; do
case $s in
minilm-attn)
	for a in default fa fa16; do
		EMBED_MODEL=$M EMBED_VK_ATTN=${a#default} step vkf-$a 150 $B/test_vk_forward
	done ;;
jina-diag)
	for v in plain gemm-hh gemm-hs ln-tree; do
		(
		case $v in
		gemm-hh) export EMBED_VK_GEMM=hh ;; gemm-hs) export EMBED_VK_GEMM=hs ;;
		ln-tree) export EMBED_VK_LN_TREE=1 ;;
		esac
		TAILN=30 EMBED_JINA_DIAG=1 EMBED_JINA_ONLY=small EMBED_JINA_MAX=4096 \
			step jina-$v 120 $B/test_jina
		)
	done ;;
layout)
	EMBED_VK_PROFILE=1 step layout 60 $B/tool_vk_bench run $M $IDS --no-cpu --batches 2,1000 --max-batches 2 ;;
jina-test)
	step jina-all 200 $B/test_jina
	step vk-mpnet 150 $B/test_vk_mpnet ;;
rerank)
	ce16
	for p in fp16 fp32; do
		step rerank-gpu-$p 120 $B/tool_rerank_bench --model $R --device gpu --precision $p < .dev/pairs.jsonl
		$B/rerank --model $R --device gpu --precision $p .dev/pairs.jsonl > $OUT/rerank-gpu-$p.jsonl 2>&1
	done
	step rerank-cpu16 150 $B/tool_rerank_bench --model $R --device cpu --threads 16 < .dev/pairs.jsonl
	$B/rerank --model $R --device cpu .dev/pairs.jsonl > $OUT/rerank-cpu.jsonl 2>&1
	$B/rerank --model $R --tokens .dev/pairs.jsonl > /tmp/tokens.jsonl
	step rerank-torch 150 python3 scripts/rerank-torch $R /tmp/tokens.jsonl cuda fp16,fp32 ;;
rerank-st)
	ce16
	for p in fp16 fp32; do
		step rerank-st-$p 120 python3 scripts/bench-rerank --tool $B/tool_rerank_bench --pairs .dev/pairs.jsonl \
			--model $R --device gpu --precision $p --st-device cuda --st-dtype $p --threads 16 --reps 2 \
			--out $OUT/rerank.md
	done ;;
mpnet-bench)
	EMBED_VK_PROFILE=1 step bench-mpnet 200 python3 scripts/bench-gpu --tool $B/tool_vk_bench --mpnet-shaped /tmp/mp \
		--ids .dev/scifact-mpnet-ids.bin --no-cpu --check-every 20 --batches 1,10,100,1000 --out $OUT/bench-mpnet.md ;;
minilm-bench)
	step bench-minilm 300 python3 scripts/bench-gpu --tool $B/tool_vk_bench --model $M --ids $IDS \
		--no-cpu --batches 1,2,10,100,1000 --out $OUT/bench-minilm.md ;;
minilm-attn-bench)
	for r in 1 2; do
		for a in default cm; do
			EMBED_VK_ATTN=${a#default} step attnbench-$a-$r 90 $B/tool_vk_bench run $M $IDS --no-cpu \
				--batches 1,2,10,100,1000 --check-every 5
		done
	done ;;
jina-8192)
	step bench-jina 400 python3 scripts/bench-gpu --tool $B/tool_vk_bench --jina-shaped /tmp/jb \
		--seq-lens 2048,8192 --jina-check-max 2048 --out $OUT/bench-jina.md ;;
ndcg)
	scifact
	rm -rf /tmp/e-* /tmp/.e-*  # fresh stores: an existing one would be reused (no precision in it)
	step ndcg-cpu-fp32 240 $ev --store /tmp/e-cpu --device cpu
	step ndcg-gpu-fp16 120 $ev --store /tmp/e-fp16 --device gpu
	for n in 15 10 7c 15o; do
		(
		p=${n%[co]}  # c: SmoothQuant, o: 8 outlier channels a product, from the calibration file
		case $n in *c) export EMBED_VK_INT8_CALIB=.dev/int8-calib.bin ;;
		*o) export EMBED_VK_INT8_CALIB=.dev/int8-calib.bin EMBED_VK_INT8_OUTLIERS=8 ;; esac
		EMBED_VK_INT8_PRODUCTS=$p step ndcg-int8-$n 120 $ev --store /tmp/e-int8-$n --device gpu \
			--precision int8
		)
	done ;;
int8-rows)
	EMBED_MODEL=$M step vkf-rows 240 $B/test_vk_forward
	for r in 1 2; do
		for p in default int8; do
			step rows-$p-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu --batches 1,100,1000 \
				--check-every 5 --precision $p
		done
	done
	step torch-rows 240 python3 scripts/bench-gpu --tool $B/tool_vk_bench --model $M --ids $IDS \
		--no-cpu --batches 1,100,1000 --torch-only --out $OUT/torch-rows.md ;;
int8-outl)
	step quant 60 $B/test_vk_quant
	for r in 1 2; do
		step outl-plain-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu --batches 1,100,1000 \
			--check-every 5 --precision int8
		for k in 8 4; do
			EMBED_VK_INT8_CALIB=.dev/int8-calib.bin EMBED_VK_INT8_OUTLIERS=$k step outl-$k-$r 60 \
				$B/tool_vk_bench run $M $IDS --no-cpu --batches 1,100,1000 --check-every 5 \
				--precision int8
		done
	done
	EMBED_VK_INT8_CALIB=.dev/int8-calib.bin EMBED_VK_INT8_OUTLIERS=8 EMBED_VK_PROFILE=1 step outl-prof 60 \
		$B/tool_vk_bench run $M $IDS --no-cpu --batches 1000 --max-batches 3 --precision int8
	step torch-rows 240 python3 scripts/bench-gpu --tool $B/tool_vk_bench --model $M --ids $IDS \
		--no-cpu --batches 1,100,1000 --torch-only --out $OUT/torch-rows.md ;;
int8-epi)
	# the int8 epilogue in the accumulators against the staged one (EMBED_VK_I8_STAGED),
	# alternating, without and with outlier channels; test_vk_forward checks their vectors
	EMBED_MODEL=$M step epi-vkf 150 $B/test_vk_forward
	for r in 1 2; do
		for o in 0 8; do
			for st in 0 1; do
				(
				[ $o = 0 ] || export EMBED_VK_INT8_CALIB=.dev/int8-calib.bin EMBED_VK_INT8_OUTLIERS=$o
				[ $st = 0 ] || export EMBED_VK_I8_STAGED=1
				step epi-o$o-staged$st-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu \
					--batches 1000 --check-every 5 --precision int8
				)
			done
		done
	done ;;
gemm-i8)
	for r in 1 2; do
		for spec in gemm_i8_w:96:128:i:2 $(ls $B/spv/i8_*.spv 2>/dev/null | sed 's/$/:96:128:i:2/'); do
			step gemm-i8-$(basename ${spec%%:*} .spv)-$r 60 $B/tool_vk_gemm --M 245760 $spec
		done
	done ;;
int8-smooth)
	# the up product with outlier channels (EMBED_VK_INT8_SMOOTH_UP=0) against the default
	# (SmoothQuant factors instead): accuracy on 1,037 texts, batch 1000, alternated, then each
	# one's profile with pipeline statistics (PyTorch: the torch step)
	for r in 1 2; do
		for c in 1 0; do
			EMBED_VK_INT8_SMOOTH_UP=$c step sm-$c-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu \
				--batches 1000 --check-every 5 --precision int8
		done
	done
	for c in 1 0; do
		TAILN=60 EMBED_VK_INT8_SMOOTH_UP=$c EMBED_VK_PROFILE=1 EMBED_VK_STATS=1 step sm-prof-$c 60 \
			$B/tool_vk_bench run $M $IDS --no-cpu --batches 1000 --max-batches 3 --precision int8
	done ;;
int8-tests)
	EMBED_MODEL=$M step i8-vkf 200 $B/test_vk_forward
	step i8-quant 60 $B/test_vk_quant ;;
attn-study)
	# attn_fa.glsl's study switches (git apply dev/attn/attn-study.patch: ATTN_EXP, ATTN_BKV),
	# one build each in .dev/g-NAME (ATTN_VARIANTS, e.g. "e1 e2 k32": B=.dev/build-e1
	# GLSLC_DEFS=-DATTN_EXP=1 DEV_DIR=.dev/g-e1 scripts/pack-device tool_vk_bench, carried as
	# .dev/g-e1/dev.tar.xz), against this build: the profiles, then int8 rows at batch 1000
	ab_rows "${ATTN_VARIANTS:-}" 1 int8 1000 ;;
ndcg-int8)
	# SciFact nDCG@10 of --precision int8 as it comes and with EMBED_VK_INT8_SMOOTH_UP=0 (the
	# CPU fp32 reference, 0.6451 with the f16 MiniLM, is the ndcg step's first row)
	scifact
	rm -rf /tmp/e-i8*
	step ndcg-int8 120 $ev --store /tmp/e-i8 --device gpu --precision int8 --run-out $OUT/run-i8.trec
	EMBED_VK_INT8_SMOOTH_UP=0 step ndcg-int8-upo 120 $ev --store /tmp/e-i8-upo --device gpu \
		--precision int8 --run-out $OUT/run-i8-upo.trec
	step ndcg-fp16 120 $ev --store /tmp/e-f16 --device gpu --run-out $OUT/run-f16.trec ;;
torch)
	step torch-rows 120 python3 scripts/bench-gpu --tool $B/tool_vk_bench --model $M --ids $IDS \
		--no-cpu --batches 100,1000 --torch-only --out $OUT/torch-rows.md ;;
queues)
	# EMBED_VK_QUEUES=2 (the two batches in flight on two queues, each in its own activations)
	# against 1, int8 and fp16, batches 100 and 1000 with the accuracy check, alternated
	for r in $(seq ${QROUNDS:-2}); do
		for p in ${QPREC:-int8 default}; do
			for q in 1 2; do
				EMBED_VK_QUEUES=$q step q$q-$p-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu \
					--batches ${QBATCHES:-100,1000} --check-every 5 --precision $p
			done
		done
	done ;;
ab)
	ab_rows "${AB_VARIANTS:-}" "${AB_ROUNDS:-2}" "${AB_PREC:-int8 default}" "${AB_BATCHES:-100,1000}" ;;
frontier)
	# issue 19's frontier: scripts/bench-gpu --precision int8 (PyTorch in the same run), then
	# the engine's batch-1000 rows alternated twice: fp16, int8 as it comes, int8 with the up
	# product's outliers (EMBED_VK_INT8_SMOOTH_UP=0), one scale a token (EMBED_VK_INT8_OUTLIERS=0)
	step fr-bench 200 python3 scripts/bench-gpu --tool $B/tool_vk_bench --model $M --ids $IDS \
		--no-cpu --batches 100,1000 --precision int8 --check-every 5 --out $OUT/fr-bench.md
	for r in 1 2; do
		step fr-fp16-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu --batches 1000 --check-every 5 \
			--precision default
		for v in int8 upo one; do
			(
			case $v in upo) export EMBED_VK_INT8_SMOOTH_UP=0 ;; one) export EMBED_VK_INT8_OUTLIERS=0 ;; esac
			step fr-$v-$r 60 $B/tool_vk_bench run $M $IDS --no-cpu --batches 1000 --check-every 5 \
				--precision int8
			)
		done
	done ;;
smooth-alpha)
	# SmoothQuant's alpha on the up product (EMBED_VK_INT8_SMOOTH_ALPHA, hundredths; ALPHAS):
	# the accuracy check with batch-1000 rows, and SciFact nDCG@10 (run-a*.trec)
	scifact
	for a in ${ALPHAS:-50 35 65 80}; do
		rm -rf /tmp/e-a$a
		EMBED_VK_INT8_SMOOTH_ALPHA=$a step alpha-$a 60 $B/tool_vk_bench run $M $IDS --no-cpu \
			--batches 1000 --check-every 5 --precision int8
		EMBED_VK_INT8_SMOOTH_ALPHA=$a step ndcg-a$a 120 $ev --store /tmp/e-a$a --device gpu \
			--precision int8 --run-out $OUT/run-a$a.trec
	done ;;
index-queues)
	# the indexer on 20 copies of SciFact (103,660 documents; scripts/bench-index-gpu's
	# truncate step, its start-up warm), EMBED_VK_QUEUES=1 against 2, int8 and fp16, alternated
	# (one copy each first, so that no timed run compiles pipelines)
	scifact
	iq() { # NAME COPIES PRECISION
		step $1 90 python3 scripts/bench-index-gpu --bin $B --model $M --corpus \
			.dev/scifact/corpus.jsonl --copies $2 --steps truncate --budget 80 \
			--cache-home /tmp/iq-cache --work /tmp/iq --out $OUT/$1.md -- --precision $3 --threads 16
	}
	for p in int8 fp16; do iq iq-warm-$p 1 $p; done
	for r in $(seq ${QROUNDS:-2}); do
		for p in int8 fp16; do
			for q in 1 2; do
				EMBED_VK_QUEUES=$q iq iq$q-$p-$r ${IQ_COPIES:-20} $p
			done
		done
	done ;;
int8)
	for p in 15 10 7 7c 15c; do
		(
		[ "${p%c}" = "$p" ] || export EMBED_VK_INT8_CALIB=.dev/int8-calib.bin
		EMBED_VK_INT8_PRODUCTS=${p%c} step int8-$p 60 $B/tool_vk_bench run $M $IDS --no-cpu \
			--batches 1,100,1000 --check-every 5 --precision int8
		)
	done ;;
*) echo "gpu-checks: unknown step $s" >&2 ;;
esac
done
