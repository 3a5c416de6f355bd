"""A readers-writer lock: the one primitive behind "safe to share between threads".

Contract for every public object (docs/safety.md): reads run concurrently, writes are
exclusive, and a write either completes or leaves the state as before. Objects that keep
their state in plain Python/numpy values prefer copy-on-write (build the new state, then
swap one reference under `write()`); objects wrapping native structures that mutate in
place (FAISS HNSW/IVF) hold `read()` around every search and `write()` around every change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Many readers or one writer; waiting writers block new readers (no writer starvation).

    Not re-entrant: a thread holding write() must not call read() or write() again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
