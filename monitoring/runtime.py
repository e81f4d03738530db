"""``process_*`` and ``python_*`` metrics that stay true under gunicorn's workers.

prometheus-client collects neither in multiprocess mode (each worker would report only
itself, and whichever worker answers a scrape would be "the process"). Here:

* ``process_*`` (CPU seconds, resident and virtual memory, open and max fds, start
  time): read from ``/proc`` at scrape time for the gunicorn master and every live
  worker, each sample labelled ``pid`` and ``role`` (``master``, ``worker``): exact,
  whichever worker answers. Sum over ``pid`` for the server's total.
* ``python_gc_*`` (collections, collected and uncollectable objects, by generation):
  each worker adds its own collector's progress to multiprocess counters, at every
  scrape it answers and every :data:`REFRESH_SECONDS` in the background; the exposition
  sums them over workers, dead ones included (counters never go back).
* ``python_info``: the interpreter, once.

In one process (``serve`` without ``--workers``, tests), prometheus-client's own
``ProcessCollector``, ``PlatformCollector`` and ``GCCollector`` do all of this.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

REFRESH_SECONDS = 10.0


def children_of(parent: int, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose parent is ``parent`` (a gunicorn master's workers), from ``/proc``."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # Fields after ``(comm)``, which may hold spaces: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


class ServerProcessCollector(Collector):
    """``process_*`` of a gunicorn master and its live workers, per ``pid`` and ``role``."""

    def __init__(self, master: int) -> None:
        self.master = master

    def collect(self) -> Iterable[Metric]:
        processes = [(self.master, "master")]
        processes += [(pid, "worker") for pid in children_of(self.master)]
        families: dict[str, Metric] = {}
        for pid, role in processes:
            reader = ProcessCollector(registry=None, pid=lambda pid=pid: pid)  # type: ignore[misc]
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid), "role": role}
                    merged.add_sample(sample.name, labels, sample.value)
        return list(families.values())


class WorkerGcCounters:
    """This worker's garbage-collector statistics as multiprocess counters (summed over
    workers by the exposition): the increments since the last :meth:`refresh`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["generation"]
        self.collections = Counter(
            "python_gc_collections", "Generation collections, all workers.", labels,
            registry=registry,
        )  # fmt: skip
        self.collected = Counter(
            "python_gc_objects_collected", "Objects collected during gc, all workers.", labels,
            registry=registry,
        )  # fmt: skip
        self.uncollectable = Counter(
            "python_gc_objects_uncollectable",
            "Uncollectable objects found during gc, all workers.",
            labels,
            registry=registry,
        )
        # From zero: the totals count every collection since this worker started.
        self._seen = [(0, 0, 0)] * len(gc.get_stats())
        for generation in range(len(self._seen)):  # every series exists, 0 included
            for counter in (self.collections, self.collected, self.uncollectable):
                counter.labels(str(generation))

    @staticmethod
    def _stats() -> list[tuple[int, int, int]]:
        return [(g["collections"], g["collected"], g["uncollectable"]) for g in gc.get_stats()]

    def refresh(self) -> None:
        now = self._stats()
        for generation, (before, after) in enumerate(zip(self._seen, now, strict=True)):
            label = str(generation)
            for counter, old, new in zip(
                (self.collections, self.collected, self.uncollectable), before, after, strict=True
            ):
                if new > old:
                    counter.labels(label).inc(new - old)
        self._seen = now


def single_process_collectors(registry: CollectorRegistry) -> None:
    """prometheus-client's own process, platform and GC collectors, for one process."""
    from prometheus_client import GCCollector, PlatformCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def add_server_collectors(registry: CollectorRegistry) -> None:
    """What a worker adds to the merged multiprocess exposition it answers."""
    from prometheus_client import PlatformCollector

    registry.register(ServerProcessCollector(os.getppid()))  # its parent: the master
    PlatformCollector(registry=registry)
