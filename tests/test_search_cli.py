"""test_search_cli.py — bin/search and bin/embed facing hostile or long-lived input: snippets
that end in (or are cut inside) multibyte characters, --queries on a directory, a malformed
query line in a file and in a stream, an endless query line (/dev/zero) in bounded memory,
absurd --threads, a streaming `--queries -` reader that must follow a --rebuild swap and let
the old store go, a model whose output is not finite (embed must not print nan), and the
GPU path's watchdog (EMBED_GPU_TIMEOUT; lavapipe where there is no GPU).

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model is missing."""
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from refcheck import EMBED, INDEXER, MODEL, SEARCH, check, failures, run


if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    print("skipped: model not fetched (run scripts/fetch-model)")
    sys.exit(77)

def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def index(store, corpus, *args):
    rc, out, err = run([INDEXER, "--store", store, "--model", MODEL, "--device", "cpu", *args, corpus])
    check(rc == 0, f"indexer {args} {corpus}: {err.strip()}")


def search_json(store, query, *args):
    rc, out, err = run([SEARCH, "--store", store, "--json", "--k", "1", *args, query])
    check(rc == 0, f"search {query!r}: {err.strip()}")
    return json.loads(out)["results"] if rc == 0 else []


tmp = tempfile.mkdtemp(prefix="test_search_cli.")
store = os.path.join(tmp, "store")

# --- snippets: the final character of a text is kept, whatever its length in bytes, and a
# cut inside a character drops that character whole (invalid UTF-8 would cost the JSON its
# "snippet" key).
texts = {"e2": "Un résumé", "e3": "東京は日本", "e4": "smile 😀", "mix": "naïve café 日本 😀 x"}
corpus = os.path.join(tmp, "c1.jsonl")
write_jsonl(corpus, [{"id": k, "text": v} for k, v in texts.items()])
index(store, corpus)
for doc, text in texts.items():
    r = search_json(store, text, "--snippet", "1000")
    check(r and r[0]["id"] == doc, f"{doc}: top hit {r}")
    if r:
        check(r[0].get("snippet") == text, f"{doc}: snippet {r[0].get('snippet')!r}, text {text!r}")
    nbytes = len(text.encode())
    for n in range(1, nbytes + 2):
        r = search_json(store, text, "--snippet", str(n))
        snip = r[0].get("snippet") if r else None
        check(snip is not None, f"{doc} --snippet {n}: no snippet in {r}")
        if snip is None:
            continue
        body = snip[:-1] if snip.endswith("…") else snip
        check(len(body.encode()) <= n and text.startswith(body),
              f"{doc} --snippet {n}: {snip!r} is not a whole-character prefix of {text!r}")
        # the longest whole-character prefix that fits, "…" exactly when something is left out
        want = ""
        for ch in text:
            if len((want + ch).encode()) > n:
                break
            want += ch
        cut = want != text
        want = want.rstrip(" ") if cut else want  # a space only ever comes before a word
        check(body == want and snip.endswith("…") == cut,
              f"{doc} --snippet {n}: {snip!r}, want {want!r}")

# --- options and --queries errors
rc, out, err = run([SEARCH, "--store", store, "--threads", "100000", "x"], timeout=60)
check(rc == 2 and "--threads" in err and out == "", f"search --threads 100000: rc {rc}, {err.strip()}")
rc, out, err = run([EMBED, "--model", MODEL, "--threads", "100000"], input=b"x\n", timeout=60)
check(rc == 2 and "--threads" in err and out == "", f"embed --threads 100000: rc {rc}, {err.strip()}")

rc, out, err = run([SEARCH, "--store", store, "--queries", tmp])
check(rc != 0 and tmp in err and out == "", f"--queries on a directory: rc {rc}, {err.strip()!r}")

qfile = os.path.join(tmp, "q.jsonl")
with open(qfile, "w") as f:
    f.write('{"_id": "q1", "text": "résumé"}\n{"_id": "q2", "text": "smile"}\n\n{"_id": "q3", "text": \n')
# A file: checked whole before any output, so a TREC run is never silently partial.
rc, out, err = run([SEARCH, "--store", store, "--queries", qfile, "--format", "trec", "--k", "1"])
check(rc != 0 and f"{qfile}:4:" in err and out == "",
      f"malformed line 4 of a file: rc {rc}, out {out!r}, err {err.strip()!r}")
# A stream: every query before the bad line is answered, then the error.
with open(qfile, "rb") as f:
    rc, out, err = run([SEARCH, "--store", store, "--queries", "-", "--format", "trec", "--k", "1"],
                       input=f.read())
ids = [l.split()[0] for l in out.splitlines()]
check(rc != 0 and "stdin:4:" in err and ids == ["q1", "q2"],
      f"malformed line 4 of a stream: rc {rc}, answered {ids}, err {err.strip()!r}")


def peak_rss_run(args, limit_kb, timeout=60):
    """Runs args, polling its RSS; kills it past limit_kb. Returns rc, stderr, peak KB."""
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, t0 = 0, time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        if peak > limit_kb:
            p.kill()
            break
        time.sleep(0.02)
    if p.poll() is None:
        p.kill()
    p.wait()
    return p.returncode, p.stderr.read().decode(errors="replace"), peak


# An endless query line ends in a FILE:LINE error in bounded memory (the cap is 1 MiB).
rc, err, peak = peak_rss_run([SEARCH, "--store", store, "--queries", "/dev/zero"], 1500 * 1024)
check(rc == 1 and "/dev/zero:1:" in err and "longer than" in err,
      f"--queries /dev/zero: rc {rc}, peak {peak} KB, err {err.strip()!r}")
p = subprocess.Popen([SEARCH, "--store", store], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
try:
    p.stdin.write(b"x" * (3 << 20))
except BrokenPipeError:
    pass
p.stdin.close()
err = p.stderr.read().decode(errors="replace")
check(p.wait() == 1 and "stdin:1:" in err and "longer than" in err, f"a 3 MB query line on stdin: {err.strip()!r}")

# --- a long-lived `--queries -` reader answers each query as it arrives, follows a --rebuild
# swap to the new generation and unmaps the old one (whose disk space is then freed).
corpus2 = os.path.join(tmp, "c2.jsonl")
write_jsonl(corpus2, [{"id": "new1", "text": "Photosynthesis turns light into chemical energy."},
                      {"id": "new2", "text": "The stock market fell sharply on Monday."}])
reader = subprocess.Popen([SEARCH, "--store", store, "--queries", "-", "--format", "trec", "--k", "1"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ask(qid, text, timeout=60):
    reader.stdin.write((json.dumps({"_id": qid, "text": text}) + "\n").encode())
    reader.stdin.flush()
    ready, _, _ = select.select([reader.stdout], [], [], timeout)
    return reader.stdout.readline().decode().split() if ready else None


def mapped_deleted(pid):
    with open(f"/proc/{pid}/maps") as f:
        return [l.strip() for l in f if "data.mdb" in l and "(deleted)" in l]


first = ask("a", "Un résumé")
check(first is not None and first[2] == "e2", f"streaming query before the rebuild: {first}")
old_dir = os.path.realpath(store)
index(store, corpus2, "--rebuild")
check(os.path.realpath(store) != old_dir and not os.path.exists(old_dir),
      "the rebuild swapped in a new directory and removed the old one")
second = ask("b", "how do plants make energy from sunlight")
check(second is not None and second[2] == "new1", f"streaming query after the rebuild: {second}")
check(not mapped_deleted(reader.pid), f"reader still maps the old store: {mapped_deleted(reader.pid)}")
reader.stdin.close()
if reader.wait(timeout=60) != 0 or first is None or second is None:
    check(False, f"streaming reader: rc {reader.returncode}, {reader.stderr.read().decode().strip()}")

# --- a model whose output is not finite: embed refuses the vector, naming the input line,
# after writing the rows before it; it never prints nan (invalid JSON) or a NaN f32 row.
nanmodel = os.path.join(tmp, "nan-model")
os.mkdir(nanmodel)
for name in os.listdir(MODEL):
    if name != "model.safetensors":
        os.symlink(os.path.join(MODEL, name), os.path.join(nanmodel, name))
rc, out, err = run([EMBED, "--model", MODEL, "--tokens"], input=b"zebra\n")
zebra = json.loads(out)[1]
shutil.copy(os.path.join(MODEL, "model.safetensors"), os.path.join(nanmodel, "model.safetensors"))
with open(os.path.join(nanmodel, "model.safetensors"), "r+b") as f:
    hlen = struct.unpack("<Q", f.read(8))[0]
    t = json.loads(f.read(hlen))["embeddings.word_embeddings.weight"]
    check(t["dtype"] == "F32", "the default model's weights are f32")
    dim = t["shape"][1]
    f.seek(8 + hlen + t["data_offsets"][0] + zebra * dim * 4)
    f.write(struct.pack("<f", float("nan")) * dim)  # the row of "zebra"
for fmt in ("jsonl", "f32"):
    p = subprocess.run([EMBED, "--model", nanmodel, "--format", fmt], input=b"a horse\na zebra\na cat\n",
                       capture_output=True, timeout=120)
    rc, out, err = p.returncode, p.stdout, p.stderr.decode(errors="replace")
    if fmt == "f32":
        vals = struct.unpack(f"<{len(out) // 4}f", out[:len(out) // 4 * 4])
        good = len(out) == 4 * dim and all(v == v and abs(v) != float("inf") for v in vals)
    else:
        lines = out.decode().splitlines()
        good = len(lines) == 1 and "nan" not in out.decode().lower() and len(json.loads(lines[0])) == dim
    check(rc == 1 and "stdin:2:" in err and "non-finite" in err and err.count("\n") == 1 and good,
          f"embed --format {fmt} with a NaN row: rc {rc}, {len(out)} bytes out, {err.strip()!r}")

# --- the GPU path's watchdog (lavapipe where there is no GPU): a forced tiny limit ends in a
# message naming EMBED_GPU_TIMEOUT; the default limit, which grows with the batch, lets a
# slow device finish.
short = b"".join(b"text number %d about cells\n" % i for i in range(16))
p = subprocess.run([EMBED, "--model", MODEL, "--device", "gpu", "--precision", "fp32", "--batch", "16"],
                   input=short, capture_output=True, timeout=600)
if p.returncode != 0 and b"Vulkan" in p.stderr:
    print("no Vulkan device: GPU watchdog checks skipped")
else:
    check(p.returncode == 0 and len(p.stdout.splitlines()) == 16,
          f"embed --device gpu, default limit: rc {p.returncode}, {p.stderr.decode().strip()}")
    env = dict(os.environ, EMBED_GPU_TIMEOUT="0.000001")
    q = subprocess.run([EMBED, "--model", MODEL, "--device", "gpu", "--precision", "fp32", "--batch", "16"],
                       input=short, capture_output=True, timeout=600, env=env)
    err = q.stderr.decode()
    check(q.returncode == 1 and "did not finish" in err and "EMBED_GPU_TIMEOUT" in err and err.count("\n") == 1,
          f"embed --device gpu with EMBED_GPU_TIMEOUT=0.000001: rc {q.returncode}, {err.strip()!r}")
    env["EMBED_GPU_TIMEOUT"] = "soon"
    q = subprocess.run([EMBED, "--model", MODEL, "--device", "gpu"], input=b"x\n", capture_output=True,
                       timeout=600, env=env)
    check(q.returncode == 1 and b"EMBED_GPU_TIMEOUT=soon" in q.stderr,
          f"EMBED_GPU_TIMEOUT=soon: rc {q.returncode}, {q.stderr.decode().strip()!r}")

shutil.rmtree(tmp, ignore_errors=True)
if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("search/embed CLI: all checks passed")
