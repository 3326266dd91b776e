"""OIDC discovery (OIDC Discovery §4) for every keyset with an ``issuer``, as a routing table.

For issuer ``https://auth.example.com/t1`` the daemon serves

    GET /t1/.well-known/openid-configuration   the discovery document below
    GET /t1/.well-known/jwks.json              that keyset's JWKS: the document's ``jwks_uri``

The document is a JWKS-only issuer's (as Kubernetes' service-account issuer publishes it):
``issuer``, ``jwks_uri``, ``id_token_signing_alg_values_supported``, ``response_types_supported``
and ``subject_types_supported``, nothing else. It depends on the configuration only, so
:func:`issuer_routes` computes the table, bodies and ETags once per configuration (start and
SIGHUP): a request costs one dict lookup. Two issuers at one path are refused by the
configuration (``keyrotd.config``), so the table never has to choose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyrotd.config import KeysetSettings, issuer_path
from keyrotd.daemon.responses import compact_json, strong_etag


@dataclass(frozen=True)
class Discovery:
    """One keyset's discovery document, as served."""

    keyset: str
    body: bytes
    etag: bytes


Route = Discovery | str
"""What an issuer path serves: a discovery document, or the JWKS of the keyset named."""


def discovery(keyset: KeysetSettings) -> Discovery:
    document = {
        "issuer": keyset.issuer,
        "jwks_uri": keyset.issuer.rstrip("/") + "/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": [keyset.algorithm],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }
    body = compact_json(document)
    return Discovery(keyset.name, body, strong_etag(body))


def issuer_routes(keysets: Iterable[KeysetSettings]) -> Mapping[str, Route]:
    """Path → what it serves, for every keyset with an issuer."""
    routes: dict[str, Route] = {}
    for keyset in keysets:
        if keyset.issuer:
            well_known = issuer_path(keyset.issuer) + "/.well-known/"
            routes[well_known + "openid-configuration"] = discovery(keyset)
            routes[well_known + "jwks.json"] = keyset.name
    return routes
