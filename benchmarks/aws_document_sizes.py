"""How many keys fit in one AWS Secrets Manager secret (65536 bytes), per algorithm.

A keyset document holds its live keys and a bounded history. The mix measured here is what a
busy keyset carries: 1 active and 1 pending key (private JWKs), N retired keys (public JWKs
only: the private part is destroyed when a key stops signing) and a full history of
``model.HISTORY_LIMIT`` expired keys (kid and times, no key material). Times carry microseconds,
as real ones do. The document is serialised by ``keyrotd.model.to_json``, byte for byte what
the storage receives.

Retired keys are copies of one real retired key under distinct kids: every public JWK of one
algorithm and key size serialises to the same length, so the copies weigh what real keys do
(and RSA-4096 generation stays out of the run time). The largest N is verified by building it.

Run: ``python benchmarks/aws_document_sizes.py``
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from keyrotd.keys import generate_key
from keyrotd.model import HISTORY_LIMIT, Key, Keyset, KeyState, to_json
from keyrotd.storage.aws import MAX_DOCUMENT_SIZE

CASES = [
    ("RS256", 2048),
    ("RS256", 3072),
    ("RS256", 4096),
    ("ES256", 0),
    ("ES384", 0),
    ("ES512", 0),
    ("EdDSA", 0),
]
START = datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)


def fake_kid(n: int) -> str:
    """A distinct kid of the real length (43 base64url characters)."""
    digest = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def live_key(alg: str, size: int, state: KeyState, day: int) -> Key:
    new = generate_key(alg, size or 2048)
    return Key(
        kid=new.kid,
        alg=alg,
        state=state,
        created_at=START + day * DAY,
        activates_at=START + (day + 1) * DAY,
        public_jwk=new.public_jwk,
        private_jwk=new.private_jwk,
    )


def retired_keys(template: Key, count: int) -> tuple[Key, ...]:
    return tuple(
        Key(
            kid=fake_kid(n),
            alg=template.alg,
            state=KeyState.RETIRED,
            created_at=START - (n + 2) * DAY,
            activates_at=START - (n + 1) * DAY,
            retired_at=START - n * DAY,
            expires_at=START - n * DAY + timedelta(hours=1, minutes=5),
            public_jwk=template.public_jwk,
        )
        for n in range(count)
    )


def history(alg: str) -> tuple[Key, ...]:
    return tuple(
        Key(
            kid=fake_kid(10_000 + n),
            alg=alg,
            state=KeyState.EXPIRED,
            created_at=START - (1000 + n) * DAY,
            activates_at=START - (999 + n) * DAY,
            retired_at=START - (998 + n) * DAY,
            expires_at=START - (998 + n) * DAY + timedelta(hours=1, minutes=5),
        )
        for n in range(HISTORY_LIMIT)
    )


def document_size(signing: tuple[Key, Key], template: Key, retired: int) -> int:
    keyset = Keyset(
        name="default",
        keys=(*signing, *retired_keys(template, retired)),
        history=history(template.alg),
        updated_at=START,
    )
    return len(to_json(keyset))


def measure(alg: str, size: int) -> tuple[int, int, int]:
    """(bytes with no retired key, bytes per retired key, most retired keys that fit)."""
    signing = (live_key(alg, size, KeyState.ACTIVE, 0), live_key(alg, size, KeyState.PENDING, 1))
    template = live_key(alg, size, KeyState.RETIRED, 2)
    base = document_size(signing, template, 0)
    per_key = document_size(signing, template, 1) - base
    fits = (MAX_DOCUMENT_SIZE - base) // per_key
    assert document_size(signing, template, fits) <= MAX_DOCUMENT_SIZE
    assert document_size(signing, template, fits + 1) > MAX_DOCUMENT_SIZE
    return base, per_key, fits


def main() -> None:
    print(
        f"Keys per AWS secret ({MAX_DOCUMENT_SIZE} bytes): 1 active + 1 pending (private) "
        f"+ N retired (public) + {HISTORY_LIMIT} history entries"
    )
    print(f"{'algorithm':<16}{'base bytes':>11}{'per retired':>13}{'max retired':>13}{'keys':>6}")
    for alg, size in CASES:
        base, per_key, fits = measure(alg, size)
        label = f"{alg}/{size}" if size else alg
        print(f"{label:<16}{base:>11}{per_key:>13}{fits:>13}{fits + 2:>6}")
    print("PS256..PS512 and RS384/RS512 weigh what RS256 of the same size does.")


if __name__ == "__main__":
    main()
