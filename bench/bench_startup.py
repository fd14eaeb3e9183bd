"""Cold start and idle memory of the storage example, each against its floor.

Two targets of issue 16, measured with real processes in throwaway projects
(:mod:`bench_project`: a temporary root, a free port on 127.0.0.1):

* cold start: ``fame up`` on an empty project root until
  ``storage@fame.fabric`` answers through the sentinel, against the time
  the same number of interpreters (``fame up`` itself, the sentinel, the
  agent node), started together as a skilled engineer would, take to start
  and import the libraries the services import (not fame). Target: at most
  1.3x.
* idle RSS of each service (the sentinel, the agent node) right after
  ``fame up``, against a process that only imports those libraries.
  Target: at most 8 MiB above that floor.

Rounds are interleaved (baseline, fame, baseline, ...) and the medians are
compared, so both sides see the same load; the load average is printed.

Run it with ``just bench`` or ``python bench/bench_startup.py [--rounds N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_project import fame_cli, new_project, service_rss_mib  # noqa: E402

LIBRARIES = (
    # What the sentinel and the node import from outside the standard library
    # (found with -X importtime), plus the heavier standard modules they use.
    # Not prometheus_client or opentelemetry: metrics and tracing are off.
    "import trio, trio_websocket, msgspec, attrs, outcome, sqlcipher3.dbapi2\n"
    "import cryptography.exceptions\n"
    "from cryptography.hazmat.primitives import hashes, serialization\n"
    "from cryptography.hazmat.primitives.asymmetric import ed25519\n"
    "from cryptography.hazmat.primitives.kdf.hkdf import HKDF\n"
    "import dotenv.parser, ssl, logging, argparse, tomllib, json, hmac, secrets\n"
)
REPORT_RSS = (
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'): print(int(line.split()[1]) / 1024)\n"
)
INTERPRETERS = 3
"""``fame up`` itself, the sentinel and the agent node."""

COLD_TARGET = 1.3
RSS_TARGET_MIB = 8.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(root: Path, name: str) -> float:
    """CPU seconds a running service has used so far (/proc/PID/stat utime + stime)."""
    pid = int((root / "run" / f"{name}.pid").read_text())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _baseline_round() -> tuple[float, float, float]:
    """Wall seconds for INTERPRETERS interpreters started together; their median RSS (MiB);
    their CPU seconds, summed."""
    cpu = _children_cpu()
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LIBRARIES + REPORT_RSS], stdout=subprocess.PIPE, text=True
        )
        for _ in range(INTERPRETERS)
    ]
    outputs = [p.communicate()[0] for p in processes]
    elapsed = time.perf_counter() - start
    if any(p.returncode for p in processes):
        raise SystemExit("a baseline interpreter failed")
    return elapsed, statistics.median(float(out) for out in outputs), _children_cpu() - cpu


def _fame_round() -> tuple[float, float, float, float]:
    """Cold ``fame up`` seconds; idle RSS (MiB) of the sentinel and of the agent node; the
    CPU seconds of ``fame up`` and both services until then, summed."""
    root, env, _port = new_project("fame-bench-startup-")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        cpu = _children_cpu()
        cold = fame_cli(root, env, "up")
        cpu = _children_cpu() - cpu + _process_cpu(root, "sentinel") + _process_cpu(root, "agent")
        return cold, service_rss_mib(root, "sentinel"), service_rss_mib(root, "agent"), cpu
    finally:
        fame_cli(root, env, "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds

    base_s: list[float] = []
    floor: list[float] = []
    cold: list[float] = []
    sentinel: list[float] = []
    agent: list[float] = []
    base_cpu: list[float] = []
    fame_cpu: list[float] = []
    # Byte-compiled as an installed package is (pip compiles; `just build` too): a checkout
    # run with PYTHONDONTWRITEBYTECODE would compile fame's sources in every process.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "fame")], check=True)
    _baseline_round()  # warm the page cache for both sides
    for _ in range(rounds):
        seconds, rss, cpu = _baseline_round()
        base_s.append(seconds)
        floor.append(rss)
        base_cpu.append(cpu)
        up, s_rss, a_rss, cpu = _fame_round()
        cold.append(up)
        fame_cpu.append(cpu)
        sentinel.append(s_rss)
        agent.append(a_rss)

    med = statistics.median
    ratio = med(cold) / med(base_s)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cold start and idle memory ({rounds} interleaved rounds, medians; load {load})")
    print(f"  {'figure':<44} {'fame':>8} {'baseline':>9} {'ratio':>7} {'target':>9}")
    print(
        f"  {'cold fame up until storage@fame.fabric answers':<44} {med(cold):7.2f}s"
        f" {med(base_s):8.2f}s {ratio:6.2f}x {'<= 1.3x':>9} {_verdict(ratio <= COLD_TARGET)}"
    )
    cpu_ratio = med(fame_cpu) / med(base_cpu)
    print(
        f"  {'  CPU of the three processes until then':<44} {med(fame_cpu):7.2f}s"
        f" {med(base_cpu):8.2f}s {cpu_ratio:6.2f}x {'(info)':>9}"
    )
    for name, values in (("sentinel", sentinel), ("agent node", agent)):
        above = med(values) - med(floor)
        print(
            f"  {'idle RSS, ' + name + ' (MiB)':<44} {med(values):8.1f} {med(floor):9.1f}"
            f" {above:+6.1f}M {'<= +8 MiB':>9} {_verdict(above <= RSS_TARGET_MIB)}"
        )
    print(
        f"  baseline: {INTERPRETERS} interpreters started together importing the services'"
        " libraries (not fame); RSS floor: one such process"
    )


if __name__ == "__main__":
    main()
