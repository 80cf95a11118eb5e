"""test_store_paths.py — where a store lives: the indexer writes only to a store of ours or
to a path that holds nothing, refuses anything else before loading a model, cleans up what
killed --rebuild runs left without touching the live store, takes one lock per store
whatever alias names it, and search works for a user who may not write the store.

Kill points of --rebuild are simulated by making the leftovers as a killed run leaves them
(with the PID of a process that has exited), and a few real SIGKILLs at random moments
(REBUILD_KILLS, default 4) check the same on real runs. The other-user checks run search as
uid 65534 through setpriv or runuser when the test runs as root; otherwise they are skipped
with the reason printed.

Run by tests/run.sh with $BIN (tools) and $BUILD; exits 77 when the model is missing."""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from refcheck import BUILD, INDEXER, MODEL, ROOT, SEARCH, check, failures, run

TOOL_LMDB = os.path.join(BUILD, "tests", "tool_lmdb")
SAMPLE = os.path.join(ROOT, "sample", "scifact-200.jsonl")

def index(store, *args, model=MODEL, input=None):
    return run([INDEXER, "--store", store, "--model", model, "--device", "cpu", "--truncate",
                *args], input=input)


def docs_in(store):
    rc, out, err = run([INDEXER, "--store", store, "--check"])
    check(rc == 0, f"--check of {store}: {err.strip()}")
    m = re.search(r"ok; .*?(\d+) documents", out)
    check(rc != 0 or m, f"--check output: {out.strip()}")
    return int(m.group(1)) if rc == 0 and m else -1


def tree_digest(path):
    """Names and contents of everything under path (a link: its target), to prove that a
    refused run changed nothing."""
    h = hashlib.sha256()
    if os.path.islink(path):
        h.update(b"link:" + os.readlink(path).encode())
    elif os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(f.read())
    elif os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            h.update(name.encode() + b"\0")
            h.update(tree_digest(os.path.join(path, name)).encode())
    return h.hexdigest()


def leftovers(parent, name):
    """Entries beside store `name` that a run made, other than the lock and the directory
    the link points to."""
    link = os.path.join(parent, name)
    target = os.readlink(link) if os.path.islink(link) else None
    return sorted(e for e in os.listdir(parent)
                  if e.startswith("." + name + ".") and e != f".{name}.lock" and e != target)


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def test_foreign_paths(tmp, src):
    """Only a missing path, an empty directory or a store of ours is written to."""
    # A foreign LMDB environment, with and without --rebuild: refused, untouched.
    foreign = os.path.join(tmp, "foreign")
    os.mkdir(foreign)
    rc, _, err = run([TOOL_LMDB, foreign, "other", "key", "value", "-", "plain", "value"])
    check(rc == 0, f"tool_lmdb: {err}")
    before = tree_digest(foreign)
    for extra in ([], ["--rebuild"]):
        rc, out, err = index(foreign, *extra, src)
        check(rc == 1 and "not a vector store" in err and foreign in err and "added" not in err,
              f"foreign LMDB {extra}: rc {rc} {err.strip()}")
        check(tree_digest(foreign) == before and os.path.isdir(foreign) and not os.path.islink(foreign),
              f"foreign LMDB {extra} left unchanged")
    # A directory holding other files, and a regular file: refused before the model is even
    # loaded (a model path that does not exist is never looked at), untouched.
    mydir = os.path.join(tmp, "mydir")
    os.mkdir(mydir)
    with open(os.path.join(mydir, "notes.txt"), "w") as f:
        f.write("precious\n")
    afile = os.path.join(tmp, "afile")
    with open(afile, "w") as f:
        f.write("precious\n")
    for path, what in ((mydir, "holding other files ('notes.txt')"), (afile, "regular file")):
        before = tree_digest(path)
        for extra in ([], ["--rebuild"]):
            rc, out, err = index(path, *extra, src, model=os.path.join(tmp, "no-model"))
            check(rc == 1 and what in err and path in err and "no-model" not in err,
                  f"{path} {extra}: rc {rc} {err.strip()}")
            check(tree_digest(path) == before and not os.path.islink(path), f"{path} {extra} unchanged")
        base = os.path.basename(path)
        check(leftovers(tmp, base) == [], f"nothing made beside {path}: {leftovers(tmp, base)}")
    # search refuses the foreign environment too (it always did).
    rc, out, err = run([SEARCH, "--store", foreign, "--model", MODEL, "x"])
    check(rc != 0, f"search on a foreign LMDB: rc {rc}")

    # Accepted: an empty directory (the store is made in place), an LMDB environment
    # without any table (an indexer killed while creating the store), a missing path (a
    # link to a versioned directory), and a plain-directory store rebuilt (becomes a link).
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    rc, _, err = index(empty, src)
    check(rc == 0 and docs_in(empty) == 5 and not os.path.islink(empty), f"empty dir: {err.strip()}")
    half = os.path.join(tmp, "half")
    os.mkdir(half)
    rc, _, err = run([TOOL_LMDB, half])
    check(rc == 0, f"tool_lmdb empty env: {err}")
    rc, _, err = index(half, src)
    check(rc == 0 and docs_in(half) == 5, f"table-less LMDB environment adopted: {err.strip()}")
    new = os.path.join(tmp, "new")
    rc, _, err = index(new, src)
    check(rc == 0 and os.path.islink(new) and docs_in(new) == 5, f"missing path: {err.strip()}")
    rc, _, err = index(empty, "--rebuild", src)
    check(rc == 0 and os.path.islink(empty) and docs_in(empty) == 5 and leftovers(tmp, "empty") == [],
          f"plain-directory store rebuilt: {err.strip()} {leftovers(tmp, 'empty')}")


def test_leftovers(tmp, src, src20):
    """What each kill point of --rebuild leaves is removed by the next run; the live store,
    the directory the link points to and what a live process builds are kept."""
    parent = os.path.join(tmp, "kills")
    os.mkdir(parent)
    st = os.path.join(parent, "st")
    rc, _, err = index(st, src)
    check(rc == 0, f"index: {err.strip()}")
    live = os.path.join(parent, os.readlink(st))

    def fake_version(pid, n, with_data=True):
        d = os.path.join(parent, f".st.{stamp()}.{pid}.{n}")
        if with_data:
            shutil.copytree(live, d)
        else:
            os.mkdir(d)
        return os.path.basename(d)

    # Killed before the swap: a half-built versioned directory. Killed at the rename: the
    # swap link to it. Killed after the rename: the old versioned directory. Killed while
    # creating: an empty versioned directory. One of a live process (this one) stays.
    dead = dead_pid()
    fake_version(dead, 0)
    fresh = fake_version(dead, 1)
    os.symlink(fresh, os.path.join(parent, f".st.swap.{dead}"))
    fake_version(dead_pid(), 0)
    fake_version(dead_pid(), 3, with_data=False)
    mine = fake_version(os.getpid(), 7)
    check(len(leftovers(parent, "st")) == 6, f"simulated leftovers: {leftovers(parent, 'st')}")
    rc, _, err = index(st, src)
    check(rc == 0 and "removed 5 leftovers" in err, f"next run: {err.strip()}")
    check(leftovers(parent, "st") == [mine], f"after the next run: {leftovers(parent, 'st')}")
    check(os.path.join(parent, os.readlink(st)) == live and docs_in(st) == 5, "live store intact")
    shutil.rmtree(os.path.join(parent, mine))

    # A plain-directory store: the swap exchanges it for the link, so a kill after that
    # leaves the old directory at .NAME.swap.PID; where exchange is unsupported it is moved
    # aside to .NAME.old.PID first, and a kill between the two renames leaves no store at
    # all: the next run moves it back before anything else.
    plain = os.path.join(parent, "plain")
    os.mkdir(plain)
    rc, _, err = index(plain, src)
    check(rc == 0 and docs_in(plain) == 5, f"plain store: {err.strip()}")
    dead = dead_pid()
    os.rename(plain, os.path.join(parent, f".plain.old.{dead}"))
    fresh = os.path.join(parent, f".plain.{stamp()}.{dead}.0")
    os.mkdir(fresh)
    os.symlink(os.path.basename(fresh), os.path.join(parent, f".plain.swap.{dead}"))
    rc, _, err = index(plain, src)
    check(rc == 0 and "removed 3 leftovers" in err and os.path.isdir(plain) and not os.path.islink(plain),
          f"moved-aside store restored: {err.strip()}")
    check(leftovers(parent, "plain") == [] and docs_in(plain) == 5, f"restored plain store: {leftovers(parent, 'plain')}")
    dead = dead_pid()
    shutil.copytree(plain, os.path.join(parent, f".plain.swap.{dead}"))
    rc, _, err = index(plain, src)
    check(rc == 0 and leftovers(parent, "plain") == [], f"exchanged-out directory removed: {leftovers(parent, 'plain')}")

    # --rebuild onto a regular file: refused before loading a model, nothing made.
    afile = os.path.join(parent, "file")
    with open(afile, "w") as f:
        f.write("x\n")
    rc, _, err = index(afile, "--rebuild", src, model=os.path.join(tmp, "no-model"))
    check(rc == 1 and "regular file" in err and leftovers(parent, "file") == [],
          f"--rebuild onto a file: {err.strip()} {leftovers(parent, 'file')}")

    # Real kills at random moments of --rebuild: the store always opens with the old or the
    # new contents, and one more run leaves nothing behind.
    kills = int(os.environ.get("REBUILD_KILLS", "4"))
    t0 = time.time()
    rc, _, err = index(st, "--rebuild", src20)
    dur = time.time() - t0
    check(rc == 0 and docs_in(st) == 20, f"rebuild: {err.strip()}")
    rng = random.Random(11)
    want = 20
    for i in range(kills):
        want = 5 if want == 20 else 20
        p = subprocess.Popen([INDEXER, "--store", st, "--model", MODEL, "--device", "cpu", "--truncate",
                              "--quiet", "--rebuild", src if want == 5 else src20],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, dur * 1.1))
        p.send_signal(signal.SIGKILL)
        p.wait()
        n = docs_in(st)
        check(n in (5, 20), f"kill {i}: store holds {n} documents")
        want = n
    before = leftovers(parent, "st")
    rc, _, err = index(st, "--delete", "none")
    after = leftovers(parent, "st")
    print(f"{kills} kills of --rebuild: {len(before)} leftovers, {len(after)} after the next run", flush=True)
    check(rc == 0 and after == [] and docs_in(st) == want, f"after real kills: {after} {err.strip()}")


def test_lock_aliases(tmp, src):
    """One lock per store, whatever names it; --rebuild through an alias swaps the store."""
    parent = os.path.join(tmp, "locks")
    os.makedirs(os.path.join(parent, "sub"))
    other = os.path.join(tmp, "elsewhere")
    os.mkdir(other)
    st = os.path.join(parent, "st")
    rc, _, err = index(st, src)
    check(rc == 0, f"index: {err.strip()}")
    os.symlink("st", os.path.join(parent, "alias"))
    os.symlink(st, os.path.join(other, "alias2"))
    os.symlink(os.path.join(other, "alias2"), os.path.join(other, "alias3"))
    # The first writer reads stdin and holds the lock until its input ends.
    p = subprocess.Popen([INDEXER, "--store", st, "--model", MODEL, "--device", "cpu", "--quiet", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    lock = os.path.join(parent, ".st.lock")
    # Wait until it holds the lock (/proc/locks lists flocks by inode; trying the lock
    # ourselves could make the writer fail instead).
    ino = os.stat(lock).st_ino
    while time.time() < deadline and p.poll() is None:
        with open("/proc/locks") as f:
            if any(l.split()[1] == "FLOCK" and l.split()[5].endswith(f":{ino}") for l in f if len(l.split()) > 5):
                break
        time.sleep(0.05)
    cwd = os.getcwd()
    os.chdir(parent)
    try:
        for alias in ("alias", os.path.join(other, "alias2"), os.path.join(other, "alias3"),
                      "sub/../st", "./st/", os.path.join(parent, os.readlink(st))):
            rc, _, err = index(alias, "--delete", "none")
            check(rc == 1 and "another indexer is writing to this store" in err and lock in err,
                  f"second writer through {alias}: rc {rc} {err.strip()}")
    finally:
        os.chdir(cwd)
    p.communicate(input=json.dumps({"_id": "extra", "text": "held the lock"}) + "\n", timeout=120)
    check(p.returncode == 0, "first writer finished")
    check(docs_in(st) == 6, "first writer's document stored")
    # --rebuild through a link to the link: the store's link is swapped, the alias stays.
    rc, _, err = index(os.path.join(other, "alias3"), "--rebuild", src)
    check(rc == 0 and os.readlink(os.path.join(other, "alias3")) == os.path.join(other, "alias2")
          and os.readlink(os.path.join(other, "alias2")) == st and docs_in(st) == 5
          and leftovers(parent, "st") == [] and not [e for e in os.listdir(other) if e.startswith(".")],
          f"rebuild through an alias: {err.strip()} {os.listdir(other)}")


def as_other_user():
    """A command prefix that runs as uid/gid 65534, or None with the reason."""
    if os.geteuid() != 0:
        return None, "not root: cannot run search as another user"
    for pre in (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
                ["runuser", "-u", "nobody", "--"]):
        try:
            if subprocess.run(pre + ["true"], capture_output=True).returncode == 0:
                return pre, None
        except OSError:
            pass
    return None, "neither setpriv nor runuser can switch to uid 65534"


def test_other_user(tmp, src):
    """Search needs read access only; a store it may not read says permission denied."""
    pre, why = as_other_user()
    if pre is None:
        print(f"test_other_user: skipped: {why}", flush=True)
        return
    for p in (MODEL, SEARCH):
        if subprocess.run(pre + ["test", "-r", p], capture_output=True).returncode != 0:
            print(f"test_other_user: skipped: uid 65534 cannot read {p}", flush=True)
            return
    st = os.path.join(tmp, "owned")
    rc, _, err = index(st, src)
    check(rc == 0, f"index: {err.strip()}")
    pub = tempfile.mkdtemp(prefix="test_store_paths.pub.")
    try:
        os.chmod(pub, 0o755)
        copy = os.path.join(pub, "copy")
        shutil.copytree(os.path.realpath(st), copy)
        os.chmod(copy, 0o755)
        for f in os.listdir(copy):
            os.chmod(os.path.join(copy, f), 0o644)

        def search():
            return run(pre + [SEARCH, "--store", copy, "--model", MODEL, "--json", "--k", "2", "cell fate"])

        rc, out, err = search()
        check(rc == 0 and len(json.loads(out or "{}").get("results", [])) == 2,
              f"other user searches a 0644 store: rc {rc} {err.strip()}")
        os.unlink(os.path.join(copy, "lock.mdb"))
        rc, out, err = search()
        check(rc == 0 and not os.path.exists(os.path.join(copy, "lock.mdb")),
              f"other user searches a store without lock.mdb in a directory it may not write: rc {rc} {err.strip()}")
        os.chmod(os.path.join(copy, "data.mdb"), 0o000)
        rc, out, err = search()
        check(rc != 0 and "ermission denied" in err and "data.mdb" in err,
              f"data.mdb mode 000: rc {rc} {err.strip()}")
        os.chmod(os.path.join(copy, "data.mdb"), 0o644)
        os.chmod(copy, 0o000)
        t0 = time.time()
        rc, out, err = search()
        check(rc != 0 and "ermission denied" in err and "missing" not in err and copy in err,
              f"store directory mode 000: rc {rc} {err.strip()}")
        check(time.time() - t0 < 10, "permission denied is not retried")
    finally:
        for dp, dn, fn in os.walk(pub):
            os.chmod(dp, 0o755)
        subprocess.run(["chmod", "-R", "u+rwx", pub])
        shutil.rmtree(pub, ignore_errors=True)


def main():
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        print("model not fetched (.cache/models/all-MiniLM-L6-v2)")
        sys.exit(77)
    for exe in (INDEXER, SEARCH, TOOL_LMDB):
        if not os.access(exe, os.X_OK):
            print(f"{exe} not built")
            sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="test_store_paths.")
    try:
        with open(SAMPLE) as f:
            lines = f.readlines()
        src = os.path.join(tmp, "s5.jsonl")
        src20 = os.path.join(tmp, "s20.jsonl")
        with open(src, "w") as f:
            f.writelines(lines[:5])
        with open(src20, "w") as f:
            f.writelines(lines[:20])
        for t, args in ((test_foreign_paths, (src,)), (test_leftovers, (src, src20)),
                        (test_lock_aliases, (src,)), (test_other_user, (src,))):
            t0 = time.time()
            t(tmp, *args)
            print(f"{t.__name__}: {time.time() - t0:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print("test_store_paths: ok")


if __name__ == "__main__":
    main()
