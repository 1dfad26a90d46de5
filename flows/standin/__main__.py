"""Run the CoinCap v3 stand-in in the foreground: `python -m flows.standin --catalog synthetic`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import fields

from flows.standin.catalog import Catalog
from flows.standin.faults import Faults
from flows.standin.records import HISTORY_INTERVALS_MS
from flows.standin.server import StubServer

_FAULT_HELP = {
    "p_5xx": "probability of 500/502/503",
    "p_429": "probability of a per-minute 429 with Retry-After",
    "retry_after_s": "Retry-After seconds of those 429s",
    "p_drop": "probability of closing the connection without a response",
    "p_truncate": "probability of sending half a body under the full Content-Length",
    "p_garbage": "probability of a 200 whose body is not JSON",
    "delay_s": "seconds to sleep before every answer",
    "quota_exhausted": "answer every call with the monthly-quota error",
    "quota_status": "403 or 429 for --quota-exhausted",
    "deprecated": "answer every call with v2's HTTP 200 deprecation notice",
    "rank_shift": "rows each page drifts by (rows repeat across pages, none lost)",
    "duplicate_rows": "rows of the previous page repeated at the top of each page",
    "fail_first_n": "answer the first N requests with 503",
    "seed": "seed of the fault draws",
    "storm_after": "requests served normally before a 5xx storm",
    "storm_requests": "length of the 5xx storm, in requests",
    "quota_after_calls": "the monthly quota runs out after this many requests",
    "hang_after": "hold every request after the first N unanswered (a stuck upstream)",
    "rate_limit": "requests allowed per --rate-window; more get 429 with Retry-After",
    "rate_window_s": "seconds of the rate limit's window",
    "p_slow": "probability of holding a response --slow seconds",
    "slow_s": "seconds a slow response is held",
    "drift_new_fields": "share of records with fields the v3 docs do not list",
    "drift_missing_optional": "share of records without their nullable fields",
    "drift_wrong_type": "share of records with a numeric field of the wrong JSON type",
    "ignore_offset": "hostile: serve the first page whatever offset asks for",
    "drift_values": "hostile: decimal values change on every answer, as live prices do",
    "over_deliver": "hostile: rows served beyond the limit asked for",
    "trickle_s": "hostile: send every answer 16 bytes at a time, one piece every this many seconds",
    "redirect": "hostile: 307 every call once, to 'same-host' or to 'other-host' (localhost)",
    "gzip_bomb_mb": "hostile: 200 answers are a gzip bomb inflating to this many MB",
    "bill_floor": "billing: every answer costs at least this many credits (above the byte rule)",
    "billing_header": "billing: send each answer's credits in this response header (e.g. X-Credits-Used)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--catalog", choices=("demo", "synthetic"), default="demo")
    parser.add_argument("--assets", type=int, default=3000, help="synthetic: number of assets")
    parser.add_argument("--exchanges", type=int, default=200, help="synthetic: number of exchanges")
    parser.add_argument("--markets", type=int, default=100_000, help="synthetic: number of markets")
    parser.add_argument("--rates", type=int, default=None, help="synthetic: number of rates (default 170)")
    parser.add_argument("--catalog-seed", type=int, default=0, help="synthetic: generation seed")
    parser.add_argument("--history-days", type=int, default=0, help="synthetic: days of history")
    parser.add_argument("--history-assets", type=int, default=10, help="synthetic: top assets with history")
    parser.add_argument(
        "--history-interval", choices=tuple(HISTORY_INTERVALS_MS), default="h1", help="synthetic: history step"
    )
    parser.add_argument("--invalid-fraction", type=float, default=0.0, help="synthetic: share of bad records")
    parser.add_argument(
        "--bad-values",
        action="store_true",
        help="serve values that pass the contracts but are wrong (market cap off price x supply, a rank gap, a "
        "market 50%% off its asset, ...: see Catalog.with_bad_values), for the data-quality checks",
    )
    parser.add_argument("--api-key", action="append", default=[], help="key to accept (repeatable)")
    faults = parser.add_argument_group("faults (all off by default)")
    for f in fields(Faults):
        flags = ["--" + f.name.replace("_", "-")]
        if f.name.endswith("_s"):  # --delay-s is also --delay, --retry-after-s also --retry-after
            flags.append(flags[0].removesuffix("-s"))
        if isinstance(f.default, bool):
            faults.add_argument(*flags, dest=f.name, action="store_true", help=_FAULT_HELP[f.name])
        else:
            kind = type(f.default)
            faults.add_argument(*flags, dest=f.name, type=kind, default=f.default, help=_FAULT_HELP[f.name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    if args.catalog == "demo":
        catalog = Catalog.demo()
    else:
        catalog = Catalog.synthetic(
            n_assets=args.assets,
            n_exchanges=args.exchanges,
            n_markets=args.markets,
            n_rates=args.rates,
            seed=args.catalog_seed,
            history_days=args.history_days,
            history_assets=args.history_assets,
            history_interval=args.history_interval,
            invalid_fraction=args.invalid_fraction,
        )
    if args.bad_values:
        catalog = catalog.with_bad_values()
        print("bad values: " + ", ".join(f"{k} {v}" for k, v in catalog.bad_values.items()), file=sys.stderr)
    faults = Faults(**{f.name: getattr(args, f.name) for f in fields(Faults)})
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = StubServer(catalog, faults=faults, api_keys=args.api_key, port=args.port, keep_served_records=False)
    except OSError as exc:
        print(
            f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); pass --port 0 for any free port",
            file=sys.stderr,
        )
        return 2
    with server:
        print(f"serving CoinCap v3 stand-in on {server.base_url}", flush=True)
        while not stop.is_set():
            # a timed wait keeps the main thread responsive to signals
            stop.wait(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
