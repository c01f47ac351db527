#!/usr/bin/env python3
"""Issue 12's targets, checked against bench/curve.py results.

Reads one or more curve.json files (bench/results/curve.json and the
partial runs beside it) and says, for each target of issue 12 that the
run measured, the figure and whether it is met:

- UDP, every offered rate, both backend kinds: the balancer's CPU per
  query at most dnsdist's.
- UDP at the low rates (demo 2k and 15k, node-mname 2k and 8k): at most 1.3
  times twice the floor's CPU per query.  Beside it, the same ratio for the
  proxy floor (bench/floor_proxy.c, and its variants where the run has
  them: with the balancer's yield, a worker per CPU, blocking threads):
  where each is above 1.3 too, no proxy
  that makes the balancer's system calls meets the target on this machine,
  and the line says so.
- UDP at full speed, demo backends: at least 2x dnsdist's queries/s at at
  most 1/3 of its CPU per query (node-mname's figures are printed beside,
  not checked: node-mname, not the proxy, is the limit there).
- TCP, every offered rate, both kinds: CPU per query at most nginx's; at
  full speed also queries/s within noise of nginx's or better (at least
  the lowest of nginx's rounds).  Beside it, the proxy floor's CPU against
  nginx's, where the run measured it over TCP (and the variant with a
  worker per CPU, as nginx runs): where each costs
  more than nginx, no proxy that reaches the backends through their
  balancer sockets meets the target on this machine.

The latency at half load and the memory per remote (the issue's last
target) are measured by bench/run.py and `cargo bench --bench
remotes_scale`, not here.

Prints a markdown table per file and, with more than one file, how many
of the runs met each target.  Exit status: 0 if every target measured is
met in every file, 1 if one is not, 2 if a file cannot be read.

    bench/targets.py bench/results/curve.json
    bench/targets.py bench/results/curve.json bench/results/curve-rotated/*/curve.json
    bench/targets.py 9a7567d:bench/results/curve.json    # an earlier full run, from git

Standard library only.
"""

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FULL = "full"
LOW_RATES = {"demo": [2000, 15000], "node": [2000, 8000]}
FLOOR_FACTOR = 1.3
SATURATION_QPS = 2.0
SATURATION_CPU = 1 / 3
KIND_NAME = {"demo": "demo", "node": "node-mname"}


def rate_label(rate):
    return "full" if rate == FULL else f"{rate // 1000}k" if rate % 1000 == 0 else str(rate)


def read(spec):
    """A file's text; COMMIT:PATH reads it as the repository held it at
    COMMIT (bench/results/curve.json is overwritten by each full run)."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        r = subprocess.run(["git", "-C", str(REPO), "show", spec], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(r.stderr.strip())
        return r.stdout
    return path.read_text()


def load(spec):
    """{(kind, proto, rate, target): summary row} of one curve.json."""
    data = json.loads(read(spec))
    cells = {}
    for row in data["summary"]:
        cells[(row["kind"], row["proto"], row["rate"], row["target"])] = row
    return data.get("environment", {}), cells


def cpu(cells, kind, proto, rate, target):
    row = cells.get((kind, proto, rate, target))
    return row["cpu_us_per_query"] if row else None


# The proxy floors a run may hold: bench/floor_proxy.c as one thread, with
# the balancer's yield (-y), as a worker process per CPU (-w), and as
# blocking threads (-t).
PROXY_FLOORS = [("floor-proxy", "proxy floor"), ("floor-proxy-yield", "proxy floor+yield"),
                ("floor-proxy-workers", "proxy floor with a worker per CPU"),
                ("floor-proxy-threads", "proxy floor with blocking threads")]


def proxy_floors(cells, kind, proto, rate):
    """(name, CPU us per query) of each proxy floor the run measured here."""
    found = []
    for target, name in PROXY_FLOORS:
        v = cpu(cells, kind, proto, rate, target)
        if v:
            found.append((name, v))
    return found


def checks(cells):
    """(target id, description, figure, met, remark) for every target the
    run measured."""
    out = []
    rates = sorted({(k, p, r) for (k, p, r, _) in cells}, key=lambda x: (x[0], x[1], x[2] == FULL,
                                                                         0 if x[2] == FULL else x[2]))
    for kind, proto, rate in rates:
        where = f"{KIND_NAME.get(kind, kind)} {proto.upper()} {rate_label(rate)}"
        bal = cpu(cells, kind, proto, rate, "mname-balancer")
        if bal is None:
            continue
        if proto == "udp":
            dd = cpu(cells, kind, proto, rate, "dnsdist")
            if dd:
                out.append((f"{where}: CPU <= dnsdist", f"{bal:.2f} / {dd:.2f} us = {bal / dd:.2f}x",
                            bal <= dd, ""))
            floor = cpu(cells, kind, proto, rate, "floor")
            if rate in LOW_RATES.get(kind, []) and floor:
                ratio = bal / (2 * floor)
                pfs = proxy_floors(cells, kind, proto, rate)
                remark = "; ".join(f"{name} {pf / (2 * floor):.2f}x" for name, pf in pfs)
                if pfs and min(pf for _, pf in pfs) / (2 * floor) > FLOOR_FACTOR:
                    remark += ": out of reach of any proxy with these system calls here"
                out.append((f"{where}: CPU <= {FLOOR_FACTOR}x (2 x floor)",
                            f"{bal:.2f} / (2 x {floor:.2f}) us = {ratio:.2f}x", ratio <= FLOOR_FACTOR, remark))
            if rate == FULL and dd:
                bal_row = cells[(kind, proto, rate, "mname-balancer")]
                dd_row = cells.get((kind, proto, rate, "dnsdist"))
                qps_ratio = bal_row["qps"] / dd_row["qps"]
                figure = (f"{bal_row['qps']:,.0f} / {dd_row['qps']:,.0f} q/s = {qps_ratio:.2f}x "
                          f"at {bal / dd:.2f}x the CPU")
                if kind == "demo":
                    out.append((f"{where}: >= {SATURATION_QPS:.0f}x dnsdist's q/s at <= 1/3 its CPU", figure,
                                qps_ratio >= SATURATION_QPS and bal / dd <= SATURATION_CPU, ""))
                else:
                    out.append((f"{where}: q/s and CPU against dnsdist (not a target)", figure, None,
                                "node-mname is the limit"))
        else:
            ng = cpu(cells, kind, proto, rate, "nginx")
            if ng:
                pfs = proxy_floors(cells, kind, proto, rate)
                remark = "; ".join(f"{name} {pf / ng:.2f}x nginx" for name, pf in pfs)
                if pfs and min(pf for _, pf in pfs) > ng:
                    remark += ": out of reach of any proxy through the balancer socket here"
                out.append((f"{where}: CPU <= nginx", f"{bal:.2f} / {ng:.2f} us = {bal / ng:.2f}x",
                            bal <= ng, remark))
            if rate == FULL and ng:
                bal_row = cells[(kind, proto, rate, "mname-balancer")]
                ng_row = cells[(kind, proto, rate, "nginx")]
                out.append((f"{where}: q/s within noise of nginx's or better",
                            f"{bal_row['qps']:,.0f} q/s against {ng_row['qps']:,.0f} "
                            f"(nginx's rounds {ng_row['qps_min']:,.0f}-{ng_row['qps_max']:,.0f})",
                            bal_row["qps"] >= ng_row["qps_min"], ""))
    return out


def order(name):
    """Sort key of a check's name ("demo UDP 2k: ..."): kind, protocol,
    rate (full last), then the check."""
    kind, proto, rate = name.split(":")[0].split()
    number = float("inf") if rate == FULL else float(rate.rstrip("k")) * (1000 if rate.endswith("k") else 1)
    return kind, proto, number, name


def verdict(met):
    return "n/a" if met is None else "met" if met else "**not met**"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+",
                    help="curve.json files written by bench/curve.py, or COMMIT:PATH for one as committed")
    args = ap.parse_args()
    tally = defaultdict(list)
    all_met = True
    for path in args.files:
        try:
            env, cells = load(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{sys.argv[0]}: cannot read {path}: {e}", file=sys.stderr)
            return 2
        version = env.get("versions", {}).get("mname-balancer", "?")
        print(f"## {path} (mname-balancer {version}, {env.get('date', '?')})\n")
        print("| target | figure | verdict | remark |")
        print("|---|---|---|---|")
        for name, figure, met, remark in checks(cells):
            print(f"| {name} | {figure} | {verdict(met)} | {remark} |")
            if met is not None:
                tally[name].append(met)
                all_met = all_met and met
        print()
    if len(args.files) > 1:
        print("## Across the runs\n")
        print("| target | met in |")
        print("|---|---|")
        for name, mets in sorted(tally.items(), key=lambda item: order(item[0])):
            print(f"| {name} | {sum(mets)} of {len(mets)} |")
        print()
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
