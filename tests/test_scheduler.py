"""The worker's pieces that need no socket: queue and batching, reuse cache, percentiles."""

import time

from fim_server.wire.options import DecodeConfig
from fim_server.wire.protocol import InfillMsg
from fim_server.wire.typed_ahead import TypedAhead
from fim_server.worker.scheduler import CANCELLED, DEADLINE, SHUTDOWN, SUPERSEDED, Job, Scheduler
from fim_server.measure import percentile

FAST, OTHER = DecodeConfig(max_tokens=8), DecodeConfig(max_tokens=9)


def job(id, doc_key=None, config=FAST, deadline_ms=None, client=b"c1"):
    msg = InfillMsg(id=id, prefix="p", suffix="s", doc_key=doc_key, deadline_ms=deadline_ms)
    return Job(envelope=[client], msg=msg, config=config, received=time.monotonic() - 1)


def test_bounded_queue_and_batches_of_one_config():
    s = Scheduler(limit=4, max_batch=2, batch_wait_s=0)
    jobs = [job("a"), job("b", config=OTHER), job("c"), job("d")]
    assert all(s.submit(j) for j in jobs)
    assert not s.submit(job("e"))                    # full: the caller answers busy
    batch, expired = s.next_batch(0.1)
    assert [j.msg.id for j in batch] == ["a", "c"] and expired == []
    assert s.depth() == (2, 2)
    s.finish(batch)
    assert [j.msg.id for j in s.next_batch(0.1)[0]] == ["b"]


def test_expired_jobs_are_handed_back_not_batched():
    s = Scheduler(limit=4, max_batch=4, batch_wait_s=0)
    s.submit(job("late", deadline_ms=time.time() * 1000 - 1))
    s.submit(job("fine", deadline_ms=time.time() * 1000 + 60_000))
    batch, expired = s.next_batch(0.1)
    assert [j.msg.id for j in batch] == ["fine"] and [j.msg.id for j in expired] == ["late"]


def test_supersede_cancel_and_should_stop():
    s = Scheduler(limit=8, max_batch=1, batch_wait_s=0)
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
    s = Scheduler(limit=8, max_batch=1, batch_wait_s=0)
    s.submit(job("soon", deadline_ms=time.time() * 1000 + 50))
    batch, _ = s.next_batch(0.1)
    assert s.should_stop(batch)([0]) == set()
    time.sleep(0.06)
    assert s.should_stop(batch)([0]) == {0} and batch[0].stop_reason == DEADLINE
    s.submit(job("left"))
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
