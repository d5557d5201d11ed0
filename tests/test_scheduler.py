"""The worker's pieces that need no socket: queue and batching, reuse cache, percentiles."""

import threading
import time

from fim_server.wire.options import DecodeConfig
from fim_server.wire.protocol import InfillMsg
from fim_server.wire.typed_ahead import TypedAhead
from fim_server.worker.scheduler import CANCELLED, DEADLINE, SHUTDOWN, SUPERSEDED, Job, Scheduler
from fim_server.measure import percentile

FAST, OTHER = DecodeConfig(max_tokens=8), DecodeConfig(max_tokens=9)


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


def job(id, doc_key=None, config=FAST, timeout_ms=None, client=b"c1", clock=CLOCK):
    msg = InfillMsg(id=id, prefix="p", suffix="s", doc_key=doc_key, timeout_ms=timeout_ms)
    return Job(envelope=[client], msg=msg, config=config, received=clock())


def test_bounded_queue_and_batches_of_one_config():
    s = Scheduler(limit=4, max_batch=2, batch_wait_s=0, clock=CLOCK)
    jobs = [job("a"), job("b", config=OTHER), job("c"), job("d")]
    assert all(s.submit(j) for j in jobs)
    assert not s.submit(job("e"))                    # full: the caller answers busy
    batch, expired = s.next_batch(0.1)
    assert [j.msg.id for j in batch] == ["a", "c"] and expired == []
    assert s.depth() == (2, 2)
    s.finish(batch)
    assert [j.msg.id for j in s.next_batch(0.1)[0]] == ["b"]


def test_only_several_clients_wait_for_batch_mates():
    s = Scheduler(limit=8, max_batch=2, batch_wait_s=30, clock=time.monotonic)
    s.submit(job("a", clock=time.monotonic))
    t0 = time.monotonic()
    batch, _ = s.next_batch(1)
    assert [j.msg.id for j in batch] == ["a"] and time.monotonic() - t0 < 10    # a lone client: no 30 s wait
    s.finish(batch)
    s.submit(job("b", client=b"c2", clock=time.monotonic))                      # a second client now sends
    threading.Timer(0.05, lambda: s.submit(job("c", clock=time.monotonic))).start()
    batch, _ = s.next_batch(1)
    assert [j.msg.id for j in batch] == ["b", "c"]                              # b waited for its mate


def test_expired_jobs_are_handed_back_not_batched():
    clock = FakeClock()
    s = Scheduler(limit=4, max_batch=4, batch_wait_s=0, clock=clock)
    s.submit(job("late", timeout_ms=100, clock=clock))
    s.submit(job("fine", timeout_ms=60_000, clock=clock))
    clock.now += 0.1                                  # the budget is relative to the receipt
    batch, expired = s.next_batch(0.1)
    assert [j.msg.id for j in batch] == ["fine"] and [j.msg.id for j in expired] == ["late"]


def test_supersede_cancel_and_should_stop():
    s = Scheduler(limit=8, max_batch=1, batch_wait_s=0, clock=CLOCK)
    s.submit(job("run", doc_key="d"))
    batch, _ = s.next_batch(0.1)
    s.submit(job("queued", doc_key="d"))
    s.submit(job("other-editor", doc_key="d", client=b"c2"))
    removed = s.supersede(b"c1", "d")
    assert [j.msg.id for j in removed] == ["queued"] and removed[0].stop_reason == SUPERSEDED
    assert s.should_stop(batch)([0]) == {0} and batch[0].stop_reason == SUPERSEDED
    assert s.cancel(b"c1", None, "d") == []          # another client's request for the same document
    s.submit(job("x", client=b"c2"))
    assert s.cancel(b"c1", "x", None) == []          # another client's id
    assert [j.msg.id for j in s.cancel(b"c2", None, "d")] == ["other-editor"]
    assert s.cancel(b"c2", "x", None)[0].stop_reason == CANCELLED


def test_should_stop_on_deadline_and_close():
    clock = FakeClock()
    s = Scheduler(limit=8, max_batch=1, batch_wait_s=0, clock=clock)
    s.submit(job("soon", timeout_ms=50, clock=clock))
    batch, _ = s.next_batch(0.1)
    clock.now += 0.049
    assert s.should_stop(batch)([0]) == set()
    clock.now += 0.001                                # the 50 ms budget is spent
    assert s.should_stop(batch)([0]) == {0} and batch[0].stop_reason == DEADLINE
    s.submit(job("left", clock=clock))
    assert [j.stop_reason for j in s.close()] == [SHUTDOWN]
    assert s.next_batch(0.1) == (None, [])


def test_reuse_serves_typed_prefix_of_the_last_completion():
    cache = TypedAhead()
    cache.remember("doc", "x = ", "\n", "foo(1)", tag=FAST)
    assert cache.lookup("doc", "x = fo", "\n", tag=FAST) == "o(1)"
    assert cache.lookup("doc", "x = foo", "\n", tag=FAST) == "(1)"       # the hit became the entry
    assert cache.lookup("doc", "x = foo(", "\n\n", tag=FAST) is None     # suffix changed
    assert cache.lookup("doc", "x = foo(", "\n", tag=OTHER) is None      # options changed
    assert cache.lookup("doc", "x = fox", "\n", tag=FAST) is None        # typed something else
    assert cache.lookup("doc", "x = foo(1)", "\n", tag=FAST) is None     # typed it all
    assert cache.lookup("doc", "x = foo", "\n", tag=FAST) is None        # same request again: compute


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95


def test_a_skewed_wall_clock_does_not_move_deadlines():
    """The budget is relative and judged on the worker's own monotonic clock: a client whose
    wall clock is hours off still gets its full budget (absolute epoch deadlines did not)."""
    clock = FakeClock(now=5.0)
    s = Scheduler(limit=8, max_batch=1, batch_wait_s=0, clock=clock)
    s.submit(job("r", timeout_ms=2000, clock=clock))
    clock.now += 1.9
    batch, expired = s.next_batch(0.1)
    assert [j.msg.id for j in batch] == ["r"] and expired == []
    assert batch[0].deadline == 7.0
