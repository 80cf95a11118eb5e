#!/bin/sh
# Runs every test of the suite and prints one closing line "N passed, N failed".
#   sh tests/run.sh BUILD_DIR BIN_DIR
# Each C test is a program $BUILD_DIR/tests/test_*; each Python test is tests/test_*.py,
# run with the .venv interpreter and told where the binaries are through $BUILD and $BIN.
# A test passes when it exits 0, is skipped when it exits 77, and fails otherwise.
set -u
B=${1:-build}
BIN=${2:-bin}
cd "$(dirname "$0")/.."
export BUILD="$B" BIN
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

# Under ASan, report leaks of our code only (tests/lsan.supp). The Vulkan loader unloads
# lavapipe (libvulkan_lvp) when an instance goes, and lavapipe its libLLVM, which leaves
# their leaks without a module name to match (seen on an AMD EPYC: 128-byte reallocs inside
# libvulkan_lvp, three a test); keeping both loaded for the whole run (LD_PRELOAD) lets the
# suppressions see them. The libLLVM must be lavapipe's own: a machine with clang has two
# (14 and Mesa's 15).
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
case "$B" in *asan*)
	lvp=$(ls /usr/lib/*/libvulkan_lvp.so 2>/dev/null | head -n 1)
	llvm=$([ -n "$lvp" ] && ldd "$lvp" 2>/dev/null | awk '/libLLVM/ { print $3; exit }')
	[ -n "$llvm" ] || llvm=$(ls /usr/lib/*/libLLVM-*.so.1 2>/dev/null | head -n 1)
	pre=$(echo "$llvm $lvp" | sed 's/^ *//; s/ *$//; s/  */:/g')
	if [ -n "$pre" ]; then
		export LD_PRELOAD="$pre" ASAN_OPTIONS="verify_asan_link_order=0:${ASAN_OPTIONS:-}"
	fi ;;
esac

pass=0; fail=0; skip=0; failed=""
run_one() {
	name=$1; shift
	start=$(date +%s)
	"$@" > "$B/tests/$name.log" 2>&1
	rc=$?
	t=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS $name (${t}s)"
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$B/tests/$name.log")"
	else
		fail=$((fail + 1)); failed="$failed $name"
		echo "FAIL $name (exit $rc, ${t}s); last lines of $B/tests/$name.log:"
		tail -n 15 "$B/tests/$name.log" | sed 's/^/    /'
	fi
}

mkdir -p "$B/tests"
for t in "$B"/tests/test_*; do
	[ -x "$t" ] || continue
	case "$t" in *.log|*.d|*.o) continue ;; esac
	run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.py; do
	[ -f "$t" ] || continue
	run_one "$(basename "$t" .py)_py" "$PY" "$t"
done

[ -n "$failed" ] && echo "failed:$failed"
if [ $skip -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ $fail -eq 0 ]
