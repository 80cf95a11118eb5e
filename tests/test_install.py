"""`make install` as a packager uses it: into a DESTDIR, then a C program built against the
installed library with nothing but pkg-config, the installed tools run from the staged tree
(finding a model installed by `make install-model`'s layout), and man pages that list the
tools' options."""
import os
import shutil
import subprocess
import tempfile

from refcheck import BIN, MODEL, ROOT, skip

BUILD = os.environ.get("BUILD", "build")
if "asan" in BUILD:
    skip("packaging is checked once, in the plain build's pass")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    skip("model not fetched (run scripts/fetch-model)")
for tool in ("help2man", "pkg-config"):
    if not shutil.which(tool):
        skip(tool + " not installed (scripts/setup installs it)")

PROGRAM = r"""
#include <embed.h>
#include <store.h>
#include <stdio.h>
int main(int argc, char **argv)
{
	embed_options o;
	embed_options_default(&o);
	embed_model *m;
	emb_err e = {0};
	if (embed_open(argv[1], &o, &m, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		return 1;
	}
	const char *texts[] = {"installed"};
	size_t lens[] = {9};
	float v[384];
	int rc = embed_encode(m, texts, lens, 1, EMBED_PREFIX_NONE, v, &e);
	printf("%d %.6f\n", embed_dim(m), v[0]);
	embed_close(m);
	return rc != 0 || argc < 2;
}
"""

with tempfile.TemporaryDirectory() as tmp:
    dest = os.path.join(tmp, "stage")
    p = subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + dest, "PREFIX=/usr",
                        "B=" + BUILD, "BIN=" + os.path.relpath(BIN, ROOT)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    usr = os.path.join(dest, "usr")
    for f in ("bin/embed", "bin/indexer", "bin/search", "lib/libembedstore.a",
              "lib/pkgconfig/embedstore.pc", "include/embedstore/embed.h",
              "include/embedstore/store.h", "share/man/man1/indexer.1"):
        assert os.path.exists(os.path.join(usr, f)), f + " not installed"

    # The man page carries the tool's options.
    page = open(os.path.join(usr, "share/man/man1/indexer.1")).read()
    assert "\\-\\-store" in page and "\\-\\-rebuild" in page, page[:400]

    # A program built with the installed pkg-config file alone.
    env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=dest,
               PKG_CONFIG_LIBDIR=os.path.join(usr, "lib/pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "--static", "embedstore"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()
    src = os.path.join(tmp, "prog.c")
    open(src, "w").write(PROGRAM)
    prog = os.path.join(tmp, "prog")
    p = subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", "-o", prog, src, *flags], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([prog, MODEL], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("384 "), p.stdout + p.stderr

    # The installed embed finds the model where install-model puts it, and gives the
    # build tree's vector.
    models = os.path.join(usr, "share/embedstore/models")
    os.makedirs(models)
    os.symlink(MODEL, os.path.join(models, "all-MiniLM-L6-v2"))
    env = {k: v for k, v in os.environ.items() if k != "EMBED_MODEL"}
    got = subprocess.run([os.path.join(usr, "bin/embed")], input="installed\n", env=env,
                         capture_output=True, text=True)
    want = subprocess.run([os.path.join(BIN, "embed"), "--model", MODEL], input="installed\n",
                          capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout == want.stdout, got.stderr
print("install: ok")
