"""Requests and wall time of one refresh of N keysets on AWS: one read each vs batched reads.

A daemon re-reads every configured keyset every ``refresh_interval``. The baseline, measured in
the same run, is what it did before ``read_many`` was batched: one
``GetSecretValue(VersionStage="AWSCURRENT")`` per keyset (``read_each``). The candidate is
``AwsStorage.read_many``: ``BatchGetSecretValue``, 20 secrets a request. Both run against
moto's server on 127.0.0.1 (a local fake: wall times here are moto's and Python's, not AWS's
network round trips; the request counts are what AWS would bill). Requests are counted by
``AwsStorage.request_counts`` (botocore's ``before-send`` hook, every attempt).

Also printed: what ``ListSecrets`` (100 secrets a page, no values) would cost as a change
detector, and the calls per keyset per day each way. docs/storage.md explains the choice.

Half the keysets are written twice through keyrotd's compare-and-swap before measuring, so the
refresh meets both freshly created secrets and ones whose ``AWSCURRENT`` was moved by
``UpdateSecretVersionStage``; moto answers a batch from a stale version for the latter, which
``read_many`` detects and reads again alone: those extra requests are moto's, AWS answers the
current version (see the docs).

Run: ``python benchmarks/aws_refresh_calls.py [--keysets 1000] [--swapped 0.5]``
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyrotd.storage.aws.storage import AwsStorage
from keyrotd.storage.interface import Versioned, read_each
from tests.support.moto import REGION, fake_aws_environment, moto_endpoint

DAY = 86400
DOCUMENT = b'{"format": "keyrotd/keyset/v1", "note": "benchmark"}'


def measure(
    storage: AwsStorage, refresh: Callable[[], object]
) -> tuple[object, dict[str, int], float]:
    """What ``refresh`` returned, the requests it sent per operation, and its wall time."""
    before = storage.request_counts()
    started = time.perf_counter()
    result = refresh()
    elapsed = time.perf_counter() - started
    after = storage.request_counts()
    counts = {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}
    return result, counts, elapsed


def check_all_read(label: str, results: object, names: list[str]) -> None:
    assert isinstance(results, dict)
    bad = [k for k in names if not isinstance(results.get(k), Versioned)]
    assert not bad, f"{label}: {len(bad)} keysets not read, e.g. {bad[:3]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keysets", type=int, default=1000, help="how many keysets (1000)")
    parser.add_argument(
        "--swapped", type=float, default=0.5, help="share written twice by CAS (0.5)"
    )
    parser.add_argument("--interval", type=float, default=30, help="refresh_interval, s (30)")
    args = parser.parse_args()
    with fake_aws_environment(), moto_endpoint() as url:
        storage = AwsStorage(
            secret_prefix=f"bench-{uuid.uuid4().hex[:8]}/", region=REGION, endpoint_url=url
        )
        names = [f"ks{n:05d}" for n in range(args.keysets)]
        swapped = int(args.keysets * args.swapped)
        print(f"writing {args.keysets} keysets ({swapped} of them swapped twice) ...")
        for n, name in enumerate(names):
            version = storage.write(name, DOCUMENT, None)
            if n < swapped:
                version = storage.write(name, DOCUMENT + b" ", version)
                storage.write(name, DOCUMENT + b"  ", version)
        each, baseline, baseline_s = measure(storage, lambda: read_each(storage, names))
        check_all_read("read_each", each, names)
        many, batched, batched_s = measure(storage, lambda: storage.read_many(names))
        check_all_read("read_many", many, names)
        assert many == each, "read_many and read_each disagree"
        listed, list_pages, list_s = measure(storage, storage.list_keysets)
        assert listed == names
        storage.close()

    refreshes = DAY / args.interval
    print(f"\none refresh of {args.keysets} keysets on moto (refresh_interval {args.interval:g} s)")
    print(f"{'':32} {'requests':>9} {'wall s':>8} {'calls/keyset/day':>17}")
    rows = [
        ("baseline: read_each", baseline, baseline_s),
        ("read_many (batched, on moto)", batched, batched_s),
    ]
    for label, counts, seconds in rows:
        total = sum(counts.values())
        per_day = total / args.keysets * refreshes
        print(f"{label:32} {total:>9} {seconds:>8.2f} {per_day:>17.1f}   {counts}")
    ideal = -(-args.keysets // 20)
    print(
        f"{'read_many on AWS (all current)':32} {ideal:>9} {'':>8} "
        f"{ideal / args.keysets * refreshes:>17.1f}   (moto's stale answers re-read: "
        f"{batched.get('GetSecretValue', 0)})"
    )
    pages = sum(list_pages.values())
    print(
        f"{'ListSecrets as a change probe':32} {pages:>9} {list_s:>8.2f} "
        f"{pages / args.keysets * refreshes:>17.1f}   (100 a page, no values; eventually "
        f"consistent: not used, see docs/storage.md)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
