"""A forked helper process whose results come back by name as they are ready (the report's overlapped work).

    job = Forked(work, arg)            # fork now: the child runs work(send, arg), calling send(name, value)
    value = job.get("name", fallback)  # wait for it; fallback() here when the child could not give it
    job.stop()

The child inherits the parent's memory (fork), so `work` may read large objects without pickling them; what
it sends is pickled. A thread in the parent drains the pipe as values arrive, so the child never waits on the
parent to read. An error the child raises is raised again by `get`; a child that dies, or never gets to a
name, makes `get` call its fallback, so the caller's result is the same either way, only later.

Fork a child before the parent opens a SQLite connection if the child opens one itself: a connection (and
SQLite's per-process lock bookkeeping) must not cross a fork. A child that only computes may be forked at any
time; it ends with os._exit (multiprocessing's way), so it never closes what it inherited.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable
from typing import Any

_ERROR = "\0error"


def can_fork() -> bool:
    """Whether this platform can fork (Linux, macOS); elsewhere callers do the work in one process."""
    return "fork" in mp.get_all_start_methods()


class Forked:
    """One forked process running `work(send, *args)`; see the module docstring."""

    def __init__(self, work: Callable[..., None], *args: Any):
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=False)
        self._results: dict = {}
        self._ended = False
        self._cond = threading.Condition()
        # not a daemon: the work may start a process pool of its own (the fits' bootstraps on a many-core
        # machine), which a daemonic process may not; `stop` ends it, whatever happens
        self._proc = ctx.Process(target=_child, args=(child, work, args))
        try:
            self._proc.start()
        finally:
            child.close()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            while True:
                name, value = self._conn.recv()
                with self._cond:
                    self._results[name] = value
                    self._cond.notify_all()
        except (EOFError, OSError):  # the child is done (or died): nothing more will come
            pass
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def get(self, name: str, fallback: Callable[[], Any]) -> Any:
        """The child's value for `name`, waiting for it; its error if it raised one first; else fallback()."""
        with self._cond:
            self._cond.wait_for(lambda: name in self._results or _ERROR in self._results or self._ended)
            if name in self._results:
                return self._results[name]
            error = self._results.pop(_ERROR, None)
        if error is not None:
            raise error
        return fallback()

    def stop(self) -> None:
        """End the child (if it still runs) and the receiving thread."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._thread.join(timeout=10)
        self._conn.close()


def _child(conn, work: Callable[..., None], args: tuple) -> None:
    def send(name: str, value: Any) -> None:
        conn.send((name, value))

    try:
        work(send, *args)
    except BaseException as err:  # noqa: BLE001 - raised again in the parent by `get`
        try:
            send(_ERROR, err)
        except Exception:  # noqa: BLE001 - an error that does not pickle: the parent falls back
            pass
    finally:
        conn.close()
