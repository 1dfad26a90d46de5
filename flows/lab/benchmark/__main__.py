"""`python -m flows.lab.benchmark`: one timed run (the whole benchmark is `coincap-pipeline benchmark`)."""

from __future__ import annotations

import json
import sys

from flows.lab.benchmark.children import naive_child, pipeline_child


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.lab.benchmark pipeline <base_url> <dbt 0|1>` or `naive <base_url>`: one run, as a JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["pipeline"] and len(args) == 3:
        print(json.dumps(pipeline_child(args[1], args[2] == "1")))
        return 0
    if args[:1] == ["naive"] and len(args) == 2:
        print(json.dumps(naive_child(args[1])))
        return 0
    print("usage: python -m flows.lab.benchmark pipeline <base_url> <0|1> | naive <base_url>  "
          "(the whole benchmark: coincap-pipeline benchmark)", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
