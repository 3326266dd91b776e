"""Custody: where the private halves of a keyset's keys live when not in its document.

``storage`` custody keeps them in the document; ``pkcs11`` and ``aws-kms`` keep them in a token or
a KMS, and the document holds only each key's public JWK and its handle (docs/custody.md). The
seam is :mod:`keyrotd.custody.interface`; each custody is one module, imported only when a keyset
is configured with it.
"""
