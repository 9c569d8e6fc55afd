"""`python -m flotilla.campaign [--seed N] [--ops N] [--duration S]
[--nemesis kill,pause,crashpoint,partition,clock,ops,placement,router,all,...] [--workload register|bank]
[--runs N] [--keep] [-o json]`:
run fault campaigns and print the summary. Exit status 1 if any run found a
violation (its directory is kept and named in the summary)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from flotilla.campaign.kinds import ALIASES, KINDS, parse_kinds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="first run's seed (default: from the clock, logged)")
    p.add_argument("--ops", type=int, default=3000, help="client operations per run (upper bound)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload per run (upper bound)")
    p.add_argument(
        "--nemesis",
        default="all",
        help=f"comma list of {', '.join(KINDS)}; or a group: {', '.join(f'{k}' for k in ALIASES)} ('all': every kind)",
    )
    p.add_argument("--runs", type=int, default=1, help="runs, seeds seed, seed+1, ...")
    p.add_argument("--total-duration", type=float, default=0.0, help="keep starting runs until this many seconds passed")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--keys", type=int, default=6)
    p.add_argument(
        "--workload", choices=("register", "bank"), default="register",
        help="register: single-key ops on --keys keys; bank: transfers by Txn between --accounts accounts on every shard",
    )
    p.add_argument("--accounts", type=int, default=8, help="bank accounts (--workload bank)")
    p.add_argument(
        "--stores", type=int, default=3,
        help="store nodes (each shard has 3 replicas: with 4 or more, replica moves under faults can succeed)",
    )
    p.add_argument("--keep", action="store_true", help="keep every run's directory, not only failing ones")
    p.add_argument("--dir", default=None, help="where run directories go (default: the temp dir)")
    p.add_argument("--check", metavar="HISTORY_JSON", help="only re-run the checkers on a kept run's history.json")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def main(argv: argparse.Namespace | list[str] | None = None) -> int:
    """Also `flotilla campaign` (cli.py's SUBCOMMANDS calls main(namespace))."""
    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        p = argparse.ArgumentParser(prog="flotilla campaign", description=__doc__)
        add_arguments(p)
        args = p.parse_args(argv)
    from flotilla.campaign.config import CampaignConfig
    from flotilla.campaign.runner import run_campaign
    from flotilla.campaign.summary import format_summary, summarize

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: every run's finally stops the processes it started

    signal.signal(signal.SIGTERM, on_term)
    if args.check:
        from pathlib import Path

        from flotilla.campaign.checkers import check_all
        from flotilla.campaign.history import History

        found = check_all(History.load(Path(args.check).read_text()))
        for v in found:
            print(f"VIOLATION {v}")
        print(f"{len(found)} violations (replica convergence is not rechecked)")
        return 1 if found else 0
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    nemeses = parse_kinds(args.nemesis)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.output == "json" else (lambda s: print(s, flush=True))
    results = []
    t0 = time.monotonic()
    i = 0
    while i < args.runs or (args.total_duration and time.monotonic() - t0 < args.total_duration):
        cfg = CampaignConfig(
            seed=seed + i, ops=args.ops, duration_s=args.duration, nemeses=nemeses, clients=args.clients,
            keys=args.keys, stores=args.stores, keep=args.keep, base_dir=args.dir, log=log,
            workload=args.workload, accounts=args.accounts,
        )
        r = run_campaign(cfg)
        results.append(r)
        log(f"run seed={r.seed}: {r.ops} ops, faults {dict(r.faults)}, {len(r.violations)} violations, {r.elapsed_s:.0f}s")
        for v in r.violations:
            log(f"  VIOLATION {v}")
        i += 1
    s = summarize(results)
    print(json.dumps(s, indent=1) if args.output == "json" else format_summary(s))
    return 1 if s["violations_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
