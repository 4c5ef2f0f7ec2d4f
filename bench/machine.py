"""What the machine itself took from the measuring cores during a run, from /proc/stat: chiefly steal, the
time the hypervisor ran another guest on a core while this one had work for it.

This machine is a 2-core VM whose speed moves by a quarter within minutes (every RESULTS.md pass says
so); on 2026-12-07 a run's steal on the server's core read 4% in one minute and 25% a few minutes later,
while both servers' req/s fell to a third. Steal is not charged to any process (so `bench/run.sh cpu`
still reads it as fewer requests done, not as CPU), and it stalls whichever server is running, so a
run's tail latency is the hypervisor's as much as the server's. bench.py and cpu.py make a stolen run
again (`--steal-retries`, 2 by default) and keep the least stolen one, and each table prints the steal of
the runs it kept, so that a reader can tell a slow server from a slow hour."""

# The fields of a `cpuN` line of /proc/stat, in order (proc(5)); guest time is inside user already.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# Above this much steal on a measuring core, a run's figures say more about the host than the server.
NOISY_STEAL_PERCENT = 5.0


def core_ticks(cpus):
    """{cpu: {field: ticks}} now, for the given CPU numbers."""
    wanted = {f"cpu{cpu}": cpu for cpu in cpus}
    ticks = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name in wanted:
                ticks[wanted[name]] = dict(zip(FIELDS, map(int, values)))
    return ticks


class CoreWatch:
    """The cores' times between `CoreWatch(cpus)` and `.steal()`: the share of each core's time stolen."""

    def __init__(self, cpus=(0, 1)):
        self.cpus = tuple(cpus)
        self.before = core_ticks(self.cpus)

    def steal(self):
        """{cpu: steal percent of that core's time since the watch began}."""
        after = core_ticks(self.cpus)
        shares = {}
        for cpu in self.cpus:
            delta = {field: after[cpu][field] - self.before[cpu][field] for field in FIELDS}
            total = sum(delta.values())
            shares[cpu] = 100.0 * delta["steal"] / total if total else 0.0
        return shares


def steal_text(percents):
    """`2.1%` or `2.1% (noisy)`: how a run's steal reads in a table."""
    worst = max(percents) if percents else 0.0
    return f"{worst:.1f}%" + (" (noisy)" if worst > NOISY_STEAL_PERCENT else "")


def least_stolen(measure, retries):
    """Runs `measure()` again while a run loses more than NOISY_STEAL_PERCENT of a measuring core to steal,
    at most `retries` more times (a bounded loop: a machine stolen from all afternoon still ends it).
    Returns the least stolen run's result, its steal (percent, the worse core's) and the runs made."""
    best = None
    runs = 0
    for _ in range(1 + max(0, retries)):
        watch = CoreWatch()
        result = measure()
        steal = max(watch.steal().values())
        runs += 1
        if best is None or steal < best[1]:
            best = (result, steal)
        if steal <= NOISY_STEAL_PERCENT:
            break
    return best[0], best[1], runs
