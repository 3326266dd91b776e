"""The issuer library's entry (docs/issuers.md): ``from keyrotd.client import Issuer``.

:class:`Issuer` signs JWTs with the keyset's current key; :class:`CustodyIssuer` is what
``Issuer.from_config`` returns for a keyset whose keys stay in custody. Both live in
:mod:`keyrotd.issuer`.
"""

from keyrotd.issuer import CustodyIssuer, Issuer

__all__ = ["CustodyIssuer", "Issuer"]
