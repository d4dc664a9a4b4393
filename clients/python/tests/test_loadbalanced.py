"""Load-balanced views and AsyncResult: a map of 1,000 items, completion-order
iteration driven by the event stream, dependencies, and the AsyncResult API."""

import io
import time

import pytest

import ippc

SETUP = """
function sq(x) return x * x end
function add(a, b) return a + b end
function shout(x) print("got " .. x) return x end
-- busy for about `seconds` (Lua has no sleep; engines run one task at a time)
function work(seconds, tag)
  local t0 = mpi.wtime()
  while mpi.wtime() - t0 < seconds do end
  return tag
end
"""


@pytest.fixture
def lb(c):
    c[:].execute(SETUP, block=True)
    return c.load_balanced_view()


def test_map_1000_ordered(lb):
    result = lb.map_sync("sq", range(1000), progress=False)
    assert result == [x * x for x in range(1000)]
    chunked = lb.map("add", range(1000), range(1000, 2000), chunksize=37, block=True,
                     progress=False)
    assert chunked == [a + b for a, b in zip(range(1000), range(1000, 2000))]


def test_map_unordered_iteration_has_every_item(lb):
    amr = lb.map_async("sq", range(200), chunksize=7, ordered=False)
    got = list(amr)
    assert sorted(got) == [x * x for x in range(200)]
    assert amr.get() == [x * x for x in range(200)] or sorted(amr.get()) == sorted(got)


def test_map_ordered_iteration(lb):
    amr = lb.map_async("sq", range(50), chunksize=4)
    assert list(amr) == [x * x for x in range(50)]
    assert amr.ready() and amr.successful() and amr.progress == len(amr)


def test_completion_order(c, lb):
    # A slow task first, then fast ones: iteration yields in the order the
    # tasks completed (as the controller's events say), not submission order.
    slow = lb.apply_async("work", 1.0, "slow")
    fast = [lb.apply_async("work", 0.0, "fast%d" % i) for i in range(3)]
    jobs = [slow] + fast
    ids = [j.task_ids[0] for j in jobs]
    ar = ippc.AsyncResult(c, "tasks", "several", tasks=ids, fmt="list")
    got = list(ar)
    assert sorted(got) == ["fast0", "fast1", "fast2", "slow"]
    completed = {c.task(t)["result"]: c.task(t)["completed"] for t in ids}
    assert got == sorted(got, key=lambda tag: completed[tag])
    assert got[-1] == "slow"  # it needed a second; the others none


def test_direct_iteration_in_completion_order(c, lb):
    ar = c[:].execute("work((3 - mpi.rank()) * 0.4, 0); return mpi.rank()", block=False)
    got = list(ar)
    assert sorted(got) == [0, 1, 2, 3]
    assert got == [3, 2, 1, 0]


def test_after_dependency(c, lb):
    first = lb.apply_async("work", 0.3, "first")
    with lb.temp_flags(after=first):
        second = lb.apply_async("work", 0.0, "second")
    assert second.get(60) == "second" and first.get(60) == "first"
    m1, m2 = first.metadata, second.metadata
    assert m2["started"] >= m1["completed"]
    with lb.temp_flags(follow=[first]):
        third = lb.apply_async("work", 0.0, "third")
    assert third.get(60) == "third"
    assert third.metadata["engine_id"] == m1["engine_id"]


def test_async_result_api(c, lb):
    ar = c[:].execute('print("out " .. mpi.rank()); work(0.2, 0)', block=False)
    assert not ar.ready() or ar.progress == 4
    assert ar.wait(60) and ar.ready() and ar.successful()
    assert ar.get() == [None] * 4  # the chunk returned nothing
    assert ar.stdout == ["out %d\n" % i for i in range(4)]
    md = ar.metadata
    assert [m["engine_id"] for m in md] == [0, 1, 2, 3]
    assert all(m["status"] == "completed" and m["submitted"] <= m["completed"] for m in md)
    assert ar.elapsed > 0 and ar.progress == 4
    buf = io.StringIO()
    ar.display_outputs(file=buf)
    assert buf.getvalue().splitlines() == ["[stdout:%d] out %d" % (i, i) for i in range(4)]
    assert len(ar.task_ids) == 4


def test_single_task_result(lb):
    ar = lb.apply_async("add", 2, 3)
    assert ar.result(60) == 5 and ar.done()
    assert ar.get(60) == 5
    c = lb.client
    c.spin()
    assert ar.task_ids[0] not in c.outstanding
    loud = lb.apply_async("shout", "x")
    assert loud.get(60) == "x" and loud.stdout == "got x\n"
    assert ar.engine_id in (0, 1, 2, 3)
    assert ar.metadata["status"] == "completed"


def test_abort_pending(c, lb):
    # Every engine busy, then one more task that is still queued: abort it.
    blockers = [lb.apply_async("work", 1.0, i) for i in range(4)]
    late = lb.apply_async("work", 0.0, "late")
    late.abort()
    with pytest.raises(ippc.TaskAborted):
        late.get(60)
    assert sorted(b.get(60) for b in blockers) == [0, 1, 2, 3]


def test_queue_status_history_purge(c, lb):
    lb.map_sync("sq", range(10), progress=False)
    q = c.queue_status()
    assert set(k for k in q if isinstance(k, int)) == {0, 1, 2, 3}
    assert all(set(v) == {"queue", "completed", "tasks"} for k, v in q.items() if k != "unassigned")
    assert "unassigned" in q
    assert c.history and all(isinstance(h, ippc.AsyncResult) for h in c.history)
    assert len(c.db_query(limit=5)) == 5
    done = list(c.tasks(state="completed", limit=3))
    assert len(done) == 3 and all(t["state"] == "completed" for t in done)
    assert c.purge_results() >= 1
    assert c.wait(timeout=30)


def test_progress_bar_terminal(lb, capsys):
    from ippc.progress import Progress
    buf = io.StringIO()
    bar = Progress(10, "map sq", widget=False, file=buf)
    bar.update(3)
    bar.update(10)
    bar.close()
    assert "3/10 tasks" in buf.getvalue() and "10/10 tasks" in buf.getvalue()
    assert lb.map("sq", range(20), block=True, progress=True) == [x * x for x in range(20)]
    assert "20/20 tasks" in capsys.readouterr().err


def count_requests(c):
    """Wraps the client's transport so the test sees every HTTP request."""
    seen = []
    real = c._rest.request

    def request(method, path, *a, **kw):
        seen.append((method, path))
        return real(method, path, *a, **kw)

    c._rest.request = request
    return seen


def test_results_come_from_the_stream_not_polling(c, lb):
    seen = count_requests(c)
    ar = lb.apply_async("work", 0.5, 7)
    assert ar.get(60) == 7
    # One POST to submit; the completion and the (scalar) result came as events.
    assert seen == [("POST", "/api/v1/tasks")]
    seen.clear()
    ar = c[:].execute("work(0.3, 0) return mpi.rank()", block=False)
    assert ar.wait(60)
    assert [m for m, _ in seen] == ["POST"]  # waiting asked the controller nothing
    assert ar.get() == [0, 1, 2, 3]


def test_stream_reconnects_and_resumes(c, lb):
    ev = c._ensure_events()
    assert ev is not None and ev.alive
    ev._ws.abort()  # the socket breaks under the client
    ar = lb.apply_async("work", 0.2, "after the break")
    assert ar.get(60) == "after the break"  # by the resumed stream or the long-poll
    deadline = time.monotonic() + 30
    while not ev.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ev.alive
    seen = count_requests(c)
    ar = lb.apply_async("work", 0.2, "again")
    assert ar.get(60) == "again" and seen == [("POST", "/api/v1/tasks")]


def test_cluster_from_file(cluster):
    cl = ippc.Cluster.from_file(profile=cluster.profile, ippc_dir=cluster.ippc_dir)
    client = cl.connect_client_sync()
    try:
        assert cl.n == 4 and client.ids == [0, 1, 2, 3]
    finally:
        client.close()


@pytest.mark.parametrize("keep", [5, 50])
def test_results_outlive_the_event_table(c, lb, keep):
    # More tasks than the stream remembers: the ones a result waits on are
    # kept; those forgotten before the result could watch them (keep=5: some
    # may finish before the map's answer) are asked of the controller.
    ev = c._ensure_events()
    ev.keep = keep
    try:
        amr = lb.map_async("sq", range(300))  # 300 chunk tasks, 900 events
        assert list(amr) == [x * x for x in range(300)]
        assert len(ev.tasks) <= keep + 300
        assert amr.get() == [x * x for x in range(300)]
        more = lb.map_sync("sq", range(120), progress=False)
        assert more == [x * x for x in range(120)]
        assert lb.apply_sync("sq", 3) == 9  # a new task makes room
        assert len(ev.tasks) <= keep + 1  # resolved results let go of theirs
    finally:
        ev.keep = 20000


def test_tasks_forgotten_before_the_watch_come_by_rest(c, lb):
    ev = c._ensure_events()
    ev.keep = 0  # nothing unwatched is kept
    try:
        ids = c._rest.post("/api/v1/tasks", [{"function": "sq", "args": [i]}
                                             for i in range(5)])["ids"]
        deadline = time.monotonic() + 60
        while ev.evicted_max < max(ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for t in ids:
            assert c._rest.get("/api/v1/tasks/%d" % t, query={"wait": 60})["state"] == \
                "completed"
        ar = ippc.AsyncResult(c, "tasks", "late", tasks=ids)
        assert ar._missed == ids  # the stream had forgotten all of them
        assert ar.get(60) == [0, 1, 4, 9, 16]
        assert list(ippc.AsyncResult(c, "tasks", "late", tasks=ids)) == [0, 1, 4, 9, 16]
    finally:
        ev.keep = 20000


def test_gap_makes_waiting_results_ask_the_controller(c, lb):
    ev = c._ensure_events()
    ar = lb.apply_async("work", 0.5, "x")
    ev._on_message({"type": "gap", "since": 0, "oldest": 1})  # as after a long outage
    assert not ar._stream_ok()
    assert ar.get(60) == "x"
