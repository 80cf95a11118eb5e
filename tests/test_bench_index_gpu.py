"""test_bench_index_gpu.py — the measuring parts of scripts/bench-index-gpu, checked here
because their numbers go into the issue's verdicts and the GPU machine that runs them gives
one call, no second look: the corpus copies (every record as it was, ids new and unique, .gz
read as plain), the peak anonymous memory (a child that holds 120 MiB of anonymous pages for
0.3 s and frees them before exiting, beside 100 MiB of file pages: the peak RssAnon must see
the 120 MiB and not the file), the timeout (a step past it is killed and said so), and the
GPU busy fraction through a stand-in nvidia-smi (0% for its first second, then 80%).

Run by tests/run.sh; standard library only."""
import gzip
import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
import sys
import tempfile
import time

from refcheck import ROOT, check, failures

SCRIPT = os.path.join(ROOT, "scripts", "bench-index-gpu")
SAMPLE = os.path.join(ROOT, "sample", "scifact-200.jsonl")


def load():
    sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the work tree
    loader = importlib.machinery.SourceFileLoader("bench_index_gpu", SCRIPT)
    spec = importlib.util.spec_from_loader("bench_index_gpu", loader)
    m = importlib.util.module_from_spec(spec)
    loader.exec_module(m)
    return m


def test_corpus(b, tmp):
    src = [json.loads(l) for l in open(SAMPLE, encoding="utf-8") if l.strip()]
    key = "_id" if "_id" in src[0] else "id"
    dst = os.path.join(tmp, "c.jsonl")
    n = b.build_corpus(SAMPLE, dst, 3, 0)
    out = [json.loads(l) for l in open(dst, encoding="utf-8")]
    check(n == 3 * len(src) == len(out), f"corpus: {n} reported, {len(out)} written, "
          f"{3 * len(src)} expected")
    check(len({r[key] for r in out}) == len(out), "corpus: ids not unique")
    for k in range(3):
        for i, r in enumerate(src):
            o = dict(out[k * len(src) + i]) if k * len(src) + i < len(out) else {}
            want = dict(r, **{key: f"{r[key]}-{k}"})
            if o != want:
                rest = "the same" if {**o, key: 0} == {**want, key: 0} else "different"
                check(False, f"corpus: copy {k} record {i}: id {o.get(key)!r} (want "
                      f"{want[key]!r}), other fields {rest}")
                return
    gz = os.path.join(tmp, "s.jsonl.gz")
    with open(SAMPLE, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    n2 = b.build_corpus(gz, os.path.join(tmp, "c2.jsonl"), 2, 5)
    same = open(os.path.join(tmp, "c2.jsonl")).read() == "".join(
        l for j, l in enumerate(open(dst)) if j < 5 or len(src) <= j < len(src) + 5)
    check(n2 == 10 and same, f"corpus from .gz, first 5 records x2: {n2} docs, same={same}")


CHILD = r"""
import mmap, sys, time
f = open(sys.argv[1], "rb")
m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
s = sum(m[i] for i in range(0, len(m), 4096))          # 100 MiB of file pages resident
a = b"\x01" * (120 << 20)                                # 120 MiB of anonymous pages
time.sleep(0.3)
del a
time.sleep(0.3)
"""


def test_memory(b, tmp):
    big = os.path.join(tmp, "file.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 100)
    r = b.run_measured([sys.executable, "-c", CHILD, big], os.path.join(tmp, "mem.log"), 60)
    anon, hwm, maxrss = r.get("RssAnon", 0), r.get("VmHWM", 0), r["maxrss_mb"]
    print(f"memory: RssAnon peak {anon:.0f} MB, VmHWM {hwm:.0f} MB, ru_maxrss {maxrss:.0f} MB, "
          f"{r['mem_samples']} samples, {r['wall']:.2f} s", flush=True)
    check(r["rc"] == 0, f"memory child exit {r['rc']}: {open(r['log']).read()}")
    check(120 <= anon < 175, f"peak RssAnon {anon:.0f} MB: want the 120 MiB block and the "
          "interpreter, not the 100 MiB of file pages")
    check(hwm >= 215 and maxrss >= 215, f"VmHWM {hwm:.0f} / ru_maxrss {maxrss:.0f} MB: want "
          "both the anonymous and the file pages (>= 215 MB)")
    check(r["mem_samples"] >= 8, f"only {r['mem_samples']} memory samples in {r['wall']:.2f} s")


def test_timeout(b, tmp):
    t = time.monotonic()
    r = b.run_measured(["sleep", "30"], os.path.join(tmp, "t.log"), 0.5)
    check(r["timed_out"] and r["rc"] != 0 and time.monotonic() - t < 10,
          f"timeout: {r['timed_out']}, rc {r['rc']}, {time.monotonic() - t:.1f} s")
    check("timed out" in b.failure(r), f"failure(): {b.failure(r)}")
    r = b.run_measured(["sh", "-c", "exit 3"], os.path.join(tmp, "e.log"), 10)
    check(not r["timed_out"] and r["rc"] == 3 and b.failure(r) == "exit 3",
          f"exit 3: {r['rc']} {b.failure(r)}")


FAKE_SMI = """#!%s
import sys, time
t0 = time.time()
while "-lms" in sys.argv:
    print(0 if time.time() - t0 < 1.0 else 80, flush=True)
    time.sleep(0.1)
"""


def test_gpu_busy(b, tmp):
    # the arithmetic: samples at 0..4 s, a run from 0.5 to 4.5 s
    g = b.gpu_busy([(0, 0), (1, 0), (2, 50), (3, 100), (4, 0)], 0.5, 4.5)
    check(g == (50.0, 37.5, 1.5, 4), f"gpu_busy arithmetic: {g}")
    check(b.gpu_busy([(1, 0), (2, 0)], 0, 3) == (0.0, 0.0, None, 2), "gpu_busy: idle run")
    check(b.gpu_busy([], 0, 3) is None, "gpu_busy: no samples")
    # through a stand-in nvidia-smi: busy after its first second
    d = os.path.join(tmp, "smi")
    os.makedirs(d)
    exe = os.path.join(d, "nvidia-smi")
    with open(exe, "w") as f:
        f.write(FAKE_SMI % sys.executable)
    os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR)
    path = os.environ["PATH"]
    os.environ["PATH"] = d + os.pathsep + path
    try:
        r = b.run_measured(["sleep", "2.5"], os.path.join(tmp, "g.log"), 30, gpu="0")
    finally:
        os.environ["PATH"] = path
    g = r.get("gpu")
    print(f"gpu: {g}", flush=True)
    check(isinstance(g, tuple) and abs(g[0] - 80) < 1e-9 and 0.3 < g[2] < 1.5
          and 20 < g[1] < 70 and g[3] >= 15,
          f"busy through the stand-in: {g} (want 80% after start-up, start-up 0.3-1.5 s)")


def main():
    b = load()
    tmp = tempfile.mkdtemp(prefix="test_bench_index_gpu.")
    try:
        for t in (test_corpus, test_memory, test_timeout, test_gpu_busy):
            t0 = time.time()
            t(b, tmp)
            print(f"{t.__name__}: {time.time() - t0:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("test_bench_index_gpu: ok")


if __name__ == "__main__":
    main()
