"""bin/embed as a user meets it: input formats, output formats, truncation, prefixes and
every kind of bad input (each a one-line error naming the line, never a crash)."""
import json
import os
import struct
import subprocess
import tempfile

from refcheck import BIN, MODEL, cosine, skip

if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")
EMBED = os.path.join(BIN, "embed")


def run(args, data):
    p = subprocess.run([EMBED, "--model", MODEL, *args], input=data, capture_output=True)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# plain lines and JSONL give the same vectors; --format f32 the same numbers as JSON
rc, out, err = run([], b"hello world\nWhat is Deep Learning?\n")
assert rc == 0, err
plain = [json.loads(l) for l in out.splitlines()]
assert len(plain) == 2 and len(plain[0]) == 384
rc, out, err = run(["--jsonl"], b'{"text": "hello world"}\n{"text": "What is Deep Learning?", "id": 3}\n')
assert rc == 0, err
assert [json.loads(l) for l in out.splitlines()] == plain
p = subprocess.run([EMBED, "--model", MODEL, "--format", "f32"], input=b"hello world\n", capture_output=True)
f32 = struct.unpack("<384f", p.stdout)
assert max(abs(a - b) for a, b in zip(f32, plain[0])) < 1e-6

# a JSONL text may hold newlines; it is one text
rc, out, err = run(["--jsonl"], b'{"text": "line one\\nline two"}\n')
assert rc == 0 and len(out.splitlines()) == 1, (rc, err)

# empty text is valid: [CLS] [SEP]
rc, out, err = run(["--tokens"], b"\n")
assert rc == 0 and json.loads(out) == [101, 102], (out, err)
rc, out, err = run([], b"\n")
assert rc == 0 and len(json.loads(out)) == 384, err

# truncation at 256 tokens, [SEP] kept last
rc, out, err = run(["--tokens"], ("word " * 1000 + "\n").encode())
ids = json.loads(out)
assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102, len(ids)

# batch size does not change vectors
rc, out1, err = run(["--batch", "1"], b"a\nbb cc\nthe quick brown fox\n")
rc, out3, err = run(["--batch", "3"], b"a\nbb cc\nthe quick brown fox\n")
for a, b in zip(out1.splitlines(), out3.splitlines()):
    assert max(abs(x - y) for x, y in zip(json.loads(a), json.loads(b))) <= 1e-6

# --prefix query on a model without prefixes changes nothing
rc, outq, err = run(["--prefix", "query"], b"hello world\n")
assert rc == 0 and cosine(json.loads(outq), plain[0]) > 0.999999

# bad input: one line, naming stdin:LINE
rc, out, err = run([], b"fine\nbad \xff\xfe utf8\n")
assert rc != 0 and "stdin:2" in err and "UTF-8" in err and err.count("\n") == 1, err
rc, out, err = run(["--jsonl"], b'{"text": "ok"}\n{"text": \n')
assert rc != 0 and "stdin:2" in err and err.count("\n") == 1, err
rc, out, err = run(["--jsonl"], b'{"title": "no text"}\n')
assert rc != 0 and "stdin:1" in err and "text" in err, err
rc, out, err = run(["--jsonl"], b'["not", "an object"]\n')
assert rc != 0 and "stdin:1" in err, err
rc, out, err = run(["--device", "tpu"], b"x\n")
assert rc == 2 and "--device" in err, err
rc, out, err = run(["--batch", "0"], b"x\n")
assert rc == 2 and "--batch" in err, err
# a line over --max-line-bytes stops after the lines before it are answered; a line of
# exactly the cap is taken; /dev/zero (one endless line) ends in an error, not in memory
rc, out, err = run(["--tokens", "--max-line-bytes", "1000"], b"ok\n" + b"a" * 1001 + b"\n")
assert rc == 1 and "stdin:2: line longer than 1000 bytes" in err and len(out.splitlines()) == 1, (rc, err)
rc, out, err = run(["--tokens", "--max-line-bytes", "1000"], b"ok\n" + b"a " * 500 + b"\r\n")
assert rc == 1 and "stdin:2:" in err, (rc, err)  # the '\r' counts: 1,001 bytes
rc, out, err = run(["--tokens", "--max-line-bytes", "1000"], b"ok\n" + b"a " * 500 + b"\n")
assert rc == 0 and len(out.splitlines()) == 2, (rc, err)
with open("/dev/zero", "rb") as z:
    p = subprocess.run([EMBED, "--model", MODEL, "--max-line-bytes", "3000000"], stdin=z,
                       capture_output=True, timeout=60)
assert p.returncode == 1 and b"stdin:1: line longer than 3000000 bytes" in p.stderr, p.stderr
p = subprocess.run([EMBED, "--model", "/nonexistent"], input=b"x\n", capture_output=True)
assert p.returncode == 1 and b"/nonexistent" in p.stderr and p.stderr.count(b"\n") == 1, p.stderr

# a model directory with an unsupported architecture
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "gpt2"}')
    p = subprocess.run([EMBED, "--model", d], input=b"x\n", capture_output=True)
    assert p.returncode == 1 and b"unsupported model_type 'gpt2'" in p.stderr, p.stderr
print("embed CLI: all checks passed")

# invalid UTF-8 past the truncation point is still refused: a text is taken whole or not at all
rc, out, err = run([], ("word " * 1000).encode() + b"\xc3\x28\n")
assert rc != 0 and "stdin:1" in err and "UTF-8" in err, err
print("invalid UTF-8 past truncation: refused")
