"""test_storage.py — the task store under storage faults, and a controller
restarted while its killed predecessor is still a zombie.

Storage faults need root: the full-disk test mounts a small tmpfs and the
-shm test uses chattr +i.  When the machine refuses either, the test fails
with a message saying so; it never skips."""

import errno
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import Cluster, check, expect, expect_error, proc_state, stop_checked

PAD = "return string.rep('x', 2000)"  # a record that needs pages of its own


def log_text(c):
    with open(os.path.join(c.dir, "controller.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")


def store_info(api, what):
    info = expect(api.get("/api/v1/info"), 200, what)
    store = info.get("store")
    check(isinstance(store, dict) and store.get("state") in ("ok", "degraded")
          and isinstance(store.get("pending"), int) and isinstance(store.get("dropped"), int)
          and isinstance(store.get("since"), str),
          "%s: /info has no store object {state, error, since, pending, dropped}: %r"
          % (what, info))
    return store


def wait_store_state(api, state, timeout, what):
    deadline = time.time() + timeout
    while True:
        store = store_info(api, what)
        if store["state"] == state:
            return store
        if time.time() > deadline:
            check(False, "%s: store still %r after %d s: %r" % (what, store["state"], timeout,
                                                               store))
        time.sleep(0.2)


def run_task(api, what, code=PAD):
    body = expect(api.post("/api/v1/tasks?block=true", {"code": code}), 200, what)
    check(body.get("state") == "completed", "%s: %r" % (what, body))
    return body["id"]


def all_tasks(api, what):
    tasks, cursor = [], 0
    while True:
        page = expect(api.get("/api/v1/tasks?limit=1000&cursor=%d" % cursor), 200, what)
        tasks += page["tasks"]
        if not page.get("next_cursor"):
            return tasks
        cursor = page["next_cursor"]


def mount_tmpfs(size):
    mnt = tempfile.mkdtemp(prefix="ippc-itest-tmpfs-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", mnt],
                       capture_output=True)
    if p.returncode != 0:
        os.rmdir(mnt)
        check(False, "cannot mount a %s tmpfs (this test needs root with CAP_SYS_ADMIN): %s"
              % (size, p.stderr.decode(errors="replace").strip()))
    return mnt


def unmount(mnt):
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(mnt, ignore_errors=True)


def fill(path):
    """Writes path until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0"):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    check(e.errno == errno.ENOSPC, "filling the tmpfs: %s" % e)
                    break
    finally:
        os.close(fd)


def test_full_disk(_unused=None):
    """A store on a full disk: /info says degraded (and the log says it once),
    tasks still run and answer from memory, the history query refuses rather
    than answer incompletely; once space is back the state is ok and every
    task is in the history."""
    mnt = mount_tmpfs("2m")
    c = Cluster(n=1, profile="storage-full",
                controller_args=["--db", os.path.join(mnt, "tasks.db")])
    notes = []
    try:
        c.start()
        api = c.api
        ids = [run_task(api, "a task before the disk fills")]
        check(store_info(api, "before")["state"] == "ok", "store ok at first")
        filler = os.path.join(mnt, "filler")
        fill(filler)
        for _ in range(200):
            ids.append(run_task(api, "a task on a full disk"))
            if store_info(api, "filling")["state"] == "degraded":
                break
        store = store_info(api, "full disk")
        check(store["state"] == "degraded" and "disk full" in (store.get("error") or "")
              and store["pending"] >= 1 and store["dropped"] == 0,
              "a full disk is reported as degraded with records pending: %r" % store)
        for i in range(10):
            ids.append(run_task(api, "task %d while degraded" % i))
        got = expect(api.get("/api/v1/tasks/%d" % ids[-1]), 200, "a task by id while degraded")
        check(got.get("state") == "completed", "answered from memory: %r" % got)
        err = expect_error(api.get("/api/v1/tasks"), 503, "unavailable",
                           "history query while degraded")
        check("degraded" in err["message"], "the query says why: %r" % err)
        check(c.controller.poll() is None, "the controller keeps running")

        os.unlink(filler)
        store = wait_store_state(api, "ok", 30, "after freeing space")
        check(store["pending"] == 0 and store["dropped"] == 0 and store.get("error") is None,
              "everything stored once space is back: %r" % store)
        history = {t["id"]: t["state"] for t in all_tasks(api, "history after the fault")}
        missing = [i for i in ids if history.get(i) != "completed"]
        check(not missing, "%d of %d tasks missing or not completed in the history: %r"
              % (len(missing), len(ids), missing[:20]))
        log = log_text(c)
        check(log.count("task store degraded") == 1 and log.count("ok again") == 1,
              "one log line per change of state, not per task:\n%s" % log[-3000:])
        notes.append("%d tasks, all in the history after the fault" % len(ids))
    finally:
        stop_checked(c)
        unmount(mnt)
    return notes


def chattr(flag, path):
    return subprocess.run(["chattr", flag, path], capture_output=True)


def test_immutable_shm(_unused=None):
    """SQLite used to mmap tasks.db-shm: chattr +i on it killed the controller
    with SIGBUS at the next task.  Now there is no -shm at all, and a stale
    immutable one left in the profile changes nothing."""
    c = Cluster(n=1, profile="storage-shm")
    profile_dir = os.path.join(c.dir, "profile_storage-shm")
    shm = os.path.join(profile_dir, "tasks.db-shm")
    probe = os.path.join(c.dir, "chattr-probe")
    open(probe, "w").close()
    p = chattr("+i", probe)
    chattr("-i", probe)
    os.unlink(probe)
    notes = []
    try:
        check(p.returncode == 0, "chattr +i is refused on the file system of %s: %s"
              % (c.dir, p.stderr.decode(errors="replace").strip()))
        c.start()
        api = c.api
        run_task(api, "first task")
        if os.path.exists(shm):
            p = chattr("+i", shm)
            check(p.returncode == 0, "chattr +i %s: %s" % (shm, p.stderr))
        for i in range(5):
            try:
                r = api.post("/api/v1/tasks?block=true", {"code": PAD}, timeout=30)
            except (OSError, http.client.HTTPException) as e:
                r = e
            status = c.controller.poll()
            if isinstance(r, Exception) and status is None:
                try:
                    status = c.controller.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if status is not None:
                how = (signal.Signals(-status).name if status < 0 else "exit status %d" % status)
                check(False, "the controller died (%s) at task %d after chattr +i on %s"
                      % (how, i, shm))
            check(not isinstance(r, Exception), "task %d: %r" % (i, r))
            body = expect(r, 200, "task %d after chattr +i on the -shm" % i)
            check(body.get("state") == "completed", "completed: %r" % body)
        check(not os.path.exists(shm), "the controller created %s: SQLite maps it, and a "
              "-shm that cannot be written is a SIGBUS" % shm)
        check(store_info(api, "after")["state"] == "ok", "store ok")

        # A stale immutable -shm from some older process: irrelevant.
        c.controller.send_signal(signal.SIGTERM)
        c.controller.wait(30)
        with open(shm, "wb") as f:
            f.write(b"\0" * 32768)
        p = chattr("+i", shm)
        check(p.returncode == 0, "chattr +i %s: %s" % (shm, p.stderr))
        c.restart_controller(wait_engines=False)
        api = c.api
        t = expect(api.post("/api/v1/tasks", {"code": PAD}), 202, "a task (stale -shm)")
        time.sleep(0.5)
        check(c.controller.poll() is None, "the controller runs beside a stale immutable -shm "
              "(status %s)" % c.controller.returncode)
        check(store_info(api, "stale -shm")["state"] == "ok", "store ok with a stale -shm")
        got = expect(api.get("/api/v1/tasks/%d" % t["id"]), 202, "the pending task")
        check(got.get("state") == "pending", "pending (no engine): %r" % got)
    finally:
        if os.path.exists(shm):
            chattr("-i", shm)
        stop_checked(c)
    return notes


def test_restart_while_zombie(_unused=None):
    """A controller restarted while its SIGKILLed predecessor is a zombie (its
    parent, this test, has not reaped it) takes the same port and token, so
    engines reconnect by themselves."""
    c = Cluster(n=1, profile="zombie")
    notes = []
    old = None
    try:
        c.start()
        run_task(c.api, "before the kill", "return 1")
        old, old_info, old_engine = c.controller, c.client_info, c.engine_info
        old.send_signal(signal.SIGKILL)  # never poll() or wait() it until the end
        deadline = time.time() + 10
        while proc_state(old.pid) != "Z":
            check(time.time() < deadline, "the killed controller did not become a zombie: %r"
                  % proc_state(old.pid))
            time.sleep(0.02)
        c.restart_controller(wait_engines=False)
        check(proc_state(old.pid) == "Z", "the old controller is still a zombie at the restart")
        check(c.client_info["url"] == old_info["url"] and
              c.client_info["token"] == old_info["token"],
              "a controller restarted beside its zombie keeps the URL and token: %r vs %r\n%s"
              % (c.client_info, old_info, log_text(c)[-2000:]))
        check(c.engine_info["key"] == old_engine["key"], "the same engine key")
        c.record_engines(c.api.wait_engines(1))
        run_task(c.api, "after the restart: the engine reconnected", "return 2")
    finally:
        if old is not None:
            old.wait(10)  # reap the zombie
        stop_checked(c)
    return notes


TESTS = [
    ("storage_full_disk_degraded_then_ok", test_full_disk, "own"),
    ("storage_immutable_shm_no_sigbus", test_immutable_shm, "own"),
    ("storage_restart_while_zombie_same_port_token", test_restart_while_zombie, "own"),
]
