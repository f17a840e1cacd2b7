"""The SDK client's pool of attempt threads (derot.app.client._AttemptThreads): threads are reused when idle,
never exceed the limit, jobs beyond it wait for the next free thread, and every thread is a daemon (an attempt
stuck on a hung gateway must not delay the process's exit)."""

from __future__ import annotations

import threading

from derot.app.client import _AttemptThreads


def _wait(event: threading.Event, what: str) -> None:
    assert event.wait(30), what


def test_idle_threads_are_reused():
    pool = _AttemptThreads(8)
    names = []
    for _ in range(20):  # one at a time: one thread does all of them
        done = threading.Event()
        pool.submit(lambda: (names.append(threading.current_thread()), done.set()))
        _wait(done, "a job did not run")
    assert len(set(names)) == 1 and names[0].daemon


def test_jobs_beyond_the_limit_wait_for_a_free_thread_and_all_run():
    pool = _AttemptThreads(2)
    release, started, finished = threading.Event(), [], []
    lock = threading.Lock()

    def blocked(i):
        def job():
            with lock:
                started.append(i)
            release.wait(30)
            with lock:
                finished.append(i)
        return job

    for i in range(5):
        pool.submit(blocked(i))
    threads = {t for t in threading.enumerate() if t.name == "derot-attempt"}
    assert pool._threads == 2  # never more than the limit
    release.set()
    done = threading.Event()
    pool.submit(done.set)
    _wait(done, "a queued job never ran")
    for _ in range(300):
        if len(finished) == 5:
            break
        threading.Event().wait(0.1)
    assert sorted(finished) == [0, 1, 2, 3, 4] and pool._threads == 2 and threads
    # the accounting is back to two idle threads: two new jobs start no third thread
    a, b = threading.Event(), threading.Event()
    pool.submit(a.set)
    pool.submit(b.set)
    _wait(a, "job a")
    _wait(b, "job b")
    assert pool._threads == 2


def test_a_failing_job_does_not_kill_its_thread():
    pool = _AttemptThreads(1)
    pool.submit(lambda: 1 / 0)
    done = threading.Event()
    pool.submit(done.set)
    _wait(done, "the thread died with the failing job")
    assert pool._threads == 1
