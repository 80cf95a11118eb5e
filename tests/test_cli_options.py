"""The tools read option values one way (engine/cli.c): a mistyped value is a usage
error (exit 2, one line naming the option and the value) before any work, never a silent
default — the indexer used to turn `--device gpux` into auto."""
import os
import subprocess
import tempfile

from refcheck import BIN, MODEL

CASES = [
    (["embed", "--device", "gpux"], "--device must be cpu, gpu or auto"),
    (["indexer", "--store", "S", "--device", "gpux", "in.jsonl"], "--device must be cpu, gpu or auto"),
    (["embed", "--precision", "fp8"], "--precision must be fp32, fp16, bf16 or int8"),
    (["indexer", "--store", "S", "--precision", "int4", "in.jsonl"], "--precision must be fp32, fp16, bf16 or int8"),
    (["search", "--store", "S", "--precision", "bf8", "q"], "--precision must be fp32, fp16, bf16 or int8"),
    (["embed", "--gpu", "first"], "--gpu needs an integer"),
    (["embed", "--batch", "0"], "--batch needs an integer from 1"),
    (["embed", "--threads", "1025"], "--threads needs an integer from 0 to 1024"),
    (["search", "--store", "S", "--threads", "-1", "q"], "--threads needs an integer from 0 to 1024"),
    (["search", "--store", "S", "--k", "10x", "q"], "--k needs an integer"),
    (["indexer", "--store", "S", "--window", "4", "in.jsonl"], "--window needs an integer from 8"),
    (["indexer", "--store", "S", "--progress-every", "soon", "in.jsonl"], "--progress-every needs a number"),
    (["indexer", "--store", "S", "--batch-tokens", "", "in.jsonl"], "--batch-tokens needs an integer"),
    (["indexer", "--store", "S", "--gpu", "0,x", "in.jsonl"], "--gpu must be all or device numbers"),
    (["indexer", "--store", "S", "--gpu", "", "in.jsonl"], "--gpu must be all or device numbers"),
    (["indexer", "--store", "S", "--queue-chunks", "0", "in.jsonl"], "--queue-chunks needs an integer from 1"),
    (["search", "--store", "S", "--rerank-k", "0", "q"], "--rerank-k needs an integer from 1"),
    (["search", "--store", "S", "--rerank-device", "tpu", "q"], "--rerank-device must be cpu, gpu or auto"),
    (["search", "--store", "S", "--rerank", "./no/such/dir", "q"], "--rerank ./no/such/dir: not a directory"),
    (["rerank", "--model", "M", "--threads", "1025"], "--threads needs an integer from 0 to 1024"),
    (["rerank", "--model", "M", "--max-tokens", "2"], "--max-tokens needs an integer from 3"),
    (["rerank", "--model", "M", "--device", "gpux"], "--device must be cpu, gpu or auto"),
    (["rerank", "--model", "M", "--pooling", "max"], "--pooling must be auto, pooler, cls or mean"),
    (["rerank", "--model", "M", "--activation", "relu"], "--activation must be default, identity, sigmoid or tanh"),
    (["rerank"], "no model: give --model DIR"),
]

failed = 0
with tempfile.TemporaryDirectory() as tmp:
    for args, want in CASES:
        p = subprocess.run([os.path.join(BIN, args[0]), *args[1:]], cwd=tmp, input=b"",
                           capture_output=True)
        err = p.stderr.decode(errors="replace")
        ok = p.returncode == 2 and want in err and err.count("\n") == 1 and args[0] + ": " in err
        if not ok:
            failed += 1
            print(f"FAIL {' '.join(args)}: exit {p.returncode}, stderr {err!r}")
    # nothing was created by a refused run
    leftover = os.listdir(tmp)
    if leftover:
        failed += 1
        print(f"FAIL refused runs left files: {leftover}")

# embed --list-devices numbers the devices as --gpu takes them; with the loader pointed at no
# driver it says so in one line and exits 1.
p = subprocess.run([os.path.join(BIN, "embed"), "--list-devices"], capture_output=True, text=True)
lines = p.stdout.splitlines()
if p.returncode != 0 or not lines or not all(l.startswith(f"{i}: ") for i, l in enumerate(lines)):
    failed += 1
    print(f"FAIL --list-devices: exit {p.returncode}, {p.stdout!r} {p.stderr!r}")
else:
    print("devices:", *lines, sep="\n  ")
    # the listed index is the one --gpu opens: the name comes back in the device line
    name = lines[0].split(": ", 1)[1].split(" (")[0]
    q = subprocess.run([os.path.join(BIN, "embed"), "--model", MODEL, "--device", "gpu", "--gpu", "0",
                        "--precision", "fp32"], input="x\n", capture_output=True, text=True)
    if q.returncode != 0:
        failed += 1
        print(f"FAIL --gpu 0 (listed as {name!r}): {q.stderr!r}")
env = dict(os.environ, VK_ICD_FILENAMES="/nonexistent/icd.json", VK_DRIVER_FILES="/nonexistent/icd.json")
p = subprocess.run([os.path.join(BIN, "embed"), "--list-devices"], capture_output=True, text=True, env=env)
if p.returncode != 1 or p.stdout or p.stderr.count("\n") != 1:
    failed += 1
    print(f"FAIL --list-devices without a driver: exit {p.returncode}, {p.stdout!r} {p.stderr!r}")
print(f"{len(CASES) + 2 - failed} of {len(CASES) + 2} option checks passed")
raise SystemExit(1 if failed else 0)
