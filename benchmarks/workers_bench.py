"""Workers sharing the outbox on PostgreSQL (MLOPS_WORK_SHARING=lanes, issue 17): throughput, latency,
CPU per event with 1, 2 and 4 workers, and how soon a killed worker's lanes pass on.

The same work for every worker count: a throwaway PostgreSQL (tests/postgres.py), a fresh schema per
count, and `--workers` processes (spawned), each a ``LaneWorker`` with the bot's ``Outbox`` and one
handler that stands in for a call to GitHub or Slack: it sleeps ``--service-ms`` (the round trip; no
CPU) and writes nothing. Each effect is one event's, in one of ``--lanes`` lanes. Every worker polls its
outbox every 10 ms when it finds nothing due (a bot's deliverer is woken by the webhooks it receives,
and polls every MLOPS_DELIVER_INTERVAL_S otherwise). Threads: one delivering thread and one renewing
thread per worker; PostgreSQL with its own processes, on the same 2-core machine.

1. Backlog: ``--events`` events stored before the workers start (not timed); timed from the start
   signal until the last effect is done (its ``done_at``): events/s; CPU per event of the workers in
   the rounds that delivered something (process time), and apart, the CPU of their rounds that found
   nothing due (a worker whose lanes are done asks every 10 ms until nothing is left pending, then
   exits: more workers wait more at the end); and the database server's CPU per event (its
   processes' times from /proc over the same span, every round included; this process asks nothing
   meanwhile).
2. Stream: new workers, events stored at ``--rate`` per second for ``--seconds`` by this process, as
   webhooks would store them; latency from storing the event to its effect done (the store's own timestamps,
   one host's clock), p50 and p99.
3. Takeover (2 workers, MLOPS_TAKEOVER_S ``--takeover``): once both hold lanes of a backlog, one is
   SIGKILLed; the time until the other has claimed a lane the dead one held, and until it has
   delivered the effect the dead one had begun (outcome unknown, looked for first). By design a
   worker's row lasts 0.7 of the takeover time.

On a 2-core machine more workers cannot add CPU: judge the scaling by the CPU per event staying flat
(no contention on the claims) and by the wall time of work that waits on the services (here, the sleep).

    python benchmarks/workers_bench.py [--workers 1 2 4] [--events 1000] [--lanes 100] [--service-ms 20]
                                       [--rate 40] [--seconds 10] [--takeover 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_IDLE_POLL_S = 0.01
_KIND = "bench.call"


def _worker(url: str, service_s: float, takeover_s: float, drain: bool, go, stop, results) -> None:
    """One worker process: deliver until ``stop`` (or, with ``drain``, until nothing is left pending);
    put its CPU seconds since ``go`` in ``results``."""
    import logging

    logging.disable(logging.WARNING)  # the outbox logs every effect; the benchmark counts them itself
    from bot.outbox import Delivered, DeliveryReport, Outbox
    from bot.store import LostLease, Store
    from bot.workers import LaneWorker

    class Service:
        def deliver(self, effect):
            time.sleep(service_s)
            return Delivered({})

        def find_done(self, effect):
            time.sleep(service_s)
            return None

    store = Store(url)
    worker = LaneWorker(store, takeover_s=takeover_s)
    worker.start(lambda working: None)
    box = Outbox(store, {_KIND: Service()}, ingest=lambda event: None)
    go.wait()
    working = idle = 0.0  # CPU seconds in rounds that delivered something, and in rounds that found nothing
    while not stop.is_set():
        cpu = time.process_time()
        try:
            report = box.deliver_due(fence=worker.fence(), should_stop=lambda: stop.is_set() or not worker.leading())
        except LostLease:
            worker.lost(worker.fence())
            continue
        if report != DeliveryReport():
            working += time.process_time() - cpu
            continue
        finished = drain and store.outbox_stats()["pending"] == 0
        idle += time.process_time() - cpu
        if finished:
            break
        time.sleep(_IDLE_POLL_S)
    results.put((working, idle))
    worker.stop()
    store.close()


class Workers:
    def __init__(self, url: str, count: int, *, service_s: float, takeover_s: float, drain: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.go, self.stop, self.results = context.Event(), context.Event(), context.Queue()
        self.processes = [context.Process(target=_worker, args=(url, service_s, takeover_s, drain, self.go,
                                                                 self.stop, self.results), daemon=True)
                          for _ in range(count)]
        for process in self.processes:
            process.start()

    def wait_registered(self, store, count: int) -> None:
        deadline = time.monotonic() + 120
        while sum(w.alive for w in store.workers()) < count:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start")
            time.sleep(0.05)

    def finish(self) -> list[tuple[float, float]]:
        """Stop them; each live one's CPU seconds (working, idle)."""
        self.stop.set()
        alive = [p for p in self.processes if p.exitcode in (None, 0)]
        cpu = [self.results.get(timeout=600) for _ in alive]
        for process in self.processes:
            process.join(timeout=60)
        return cpu

    def drained(self) -> list[tuple[float, float]]:
        """Wait for draining workers to find nothing pending and exit; each one's CPU seconds (working, idle)."""
        cpu = [self.results.get(timeout=600) for _ in self.processes]
        for process in self.processes:
            process.join(timeout=60)
        return cpu


def _server_cpu_s(root: Path) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster (with its reaped children) and its live children."""
    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _store_events(store, count: int, *, lanes: int, start: int = 0) -> None:
    from bot.store import NewEffect

    for n in range(start, start + count):
        store.ingest(f"event-{n}", "bench", "bench", {}, [NewEffect(f"effect-{n}", _KIND, {}, f"lane-{n % lanes}")])


def _done(store) -> int:
    return store.outbox_stats()["done"]


def _wait_all_done(store, total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _done(store) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {_done(store)} of {total} effects were done in {timeout:g} s")
        time.sleep(0.05)


def measure(server, count: int, args) -> dict:
    from bot.store import Store, utc_now

    url = server.new_schema(f"w{count}")
    store = Store(url)
    _store_events(store, args.events, lanes=args.lanes)
    workers = Workers(url, count, service_s=args.service_ms / 1000, takeover_s=30, drain=True)
    workers.wait_registered(store, count)
    server_cpu = _server_cpu_s(server.root)
    started = utc_now()
    workers.go.set()
    spent = workers.drained()
    worker_cpu, idle_cpu = sum(w for w, _ in spent), sum(i for _, i in spent)
    server_cpu = _server_cpu_s(server.root) - server_cpu
    done = store.effects(status="done", limit=args.events)
    if len(done) != args.events:
        raise SystemExit(f"only {len(done)} of {args.events} effects were done")
    backlog_s = (max(e.done_at for e in done) - started).total_seconds()

    # The stream: new workers; events at a steady rate, as webhooks would store them.
    workers = Workers(url, count, service_s=args.service_ms / 1000, takeover_s=30)
    workers.wait_registered(store, count)
    workers.go.set()
    total, interval = args.events, 1 / args.rate
    next_at = time.monotonic()
    for _ in range(int(args.rate * args.seconds)):
        _store_events(store, 1, lanes=args.lanes, start=total)
        total += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    _wait_all_done(store, total)
    workers.finish()
    effects = [e for e in store.effects(status="done", limit=total) if int(e.key.split("-")[1]) >= args.events]
    latencies = sorted((e.done_at - e.created_at).total_seconds() for e in effects)
    store.close()
    return {"workers": count, "backlog_s": backlog_s, "events_per_s": args.events / backlog_s,
            "worker_cpu_ms": 1000 * worker_cpu / args.events, "idle_cpu_s": idle_cpu,
            "server_cpu_ms": 1000 * server_cpu / args.events,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
            "streamed": len(latencies)}


def takeover(server, args) -> dict:
    import sqlalchemy as sa

    from bot.store import Store

    url = server.new_schema("takeover")
    store = Store(url)
    _store_events(store, args.events, lanes=args.lanes)
    workers = Workers(url, 2, service_s=args.service_ms / 1000, takeover_s=args.takeover)
    workers.wait_registered(store, 2)
    workers.go.set()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def held() -> dict[str, list[str]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT holder, lane FROM lane_claims WHERE holder != ''")).all()
        by_holder: dict[str, list[str]] = {}
        for holder, lane in rows:
            by_holder.setdefault(holder, []).append(lane)
        return by_holder

    while len(held()) < 2:
        time.sleep(0.005)
    victim_name, victim_lanes = next(iter(held().items()))
    pid = int(victim_name.split(":")[1])
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    with engine.connect() as conn:
        begun = conn.execute(sa.text("SELECT key FROM effects WHERE status = 'pending' AND outcome_unknown "
                                     "AND lane = ANY(:lanes)"), {"lanes": victim_lanes}).scalars().all()
    claimed_at = done_at = None
    while claimed_at is None or (begun and done_at is None):
        now_held = held()
        if claimed_at is None and any(lane in lanes for holder, lanes in now_held.items() if holder != victim_name
                                      for lane in victim_lanes):
            claimed_at = time.monotonic()
        if begun and done_at is None and all(store.effect(key).status == "done" for key in begun):
            done_at = time.monotonic()
        if time.monotonic() - killed > args.takeover * 5:
            raise SystemExit("the killed worker's lanes were not taken over")
        time.sleep(0.005)
    workers.finish()
    engine.dispose()
    store.close()
    return {"claimed_s": claimed_at - killed, "recovered_s": None if done_at is None else done_at - killed,
            "lanes": len(victim_lanes), "begun": len(begun)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--takeover", type=float, default=3.0)
    args = parser.parse_args()
    from tests.postgres import find_binaries, start_server, stop_server

    bin_dir = find_binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    load = os.getloadavg()
    server = start_server(bin_dir)
    try:
        rows = [measure(server, count, args) for count in args.workers]
        moved = takeover(server, args)
    finally:
        stop_server(server, bin_dir)
    print(f"machine: {os.cpu_count()} CPUs, load average at start {load[0]:.2f}; {server.version}")
    print(f"backlog: {args.events} events, one effect each, in {args.lanes} lanes; a service call sleeps "
          f"{args.service_ms:g} ms; stream: {args.rate:g} events/s for {args.seconds:g} s")
    print(f"{'workers':>8}{'backlog s':>11}{'events/s':>10}{'x of 1':>8}{'worker CPU ms/ev':>18}"
          f"{'idle rounds CPU s':>19}{'server CPU ms/ev':>18}{'p50 ms':>9}{'p99 ms':>9}")
    first = rows[0]["events_per_s"]
    for row in rows:
        print(f"{row['workers']:>8}{row['backlog_s']:>11.2f}{row['events_per_s']:>10.1f}"
              f"{row['events_per_s'] / first:>7.2f}x{row['worker_cpu_ms']:>18.2f}{row['idle_cpu_s']:>19.2f}"
              f"{row['server_cpu_ms']:>18.2f}"
              f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}")
    recovered = ("" if moved["recovered_s"] is None
                 else f"; its begun effect(s) done after {moved['recovered_s']:.2f} s")
    print(f"takeover (MLOPS_TAKEOVER_S={args.takeover:g}, a worker's row lasts {0.7 * args.takeover:.1f} s): "
          f"a killed worker held {moved['lanes']} lane(s) with {moved['begun']} effect(s) begun; another worker "
          f"claimed one {moved['claimed_s']:.2f} s after the kill{recovered}")


if __name__ == "__main__":
    main()
