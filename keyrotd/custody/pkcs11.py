"""PKCS#11 custody: keys generated inside a token (an HSM, or SoftHSM2), never extractable.

Each keypair is generated in the token with the private half ``CKA_SENSITIVE`` true and
``CKA_EXTRACTABLE`` false, both halves stored as token objects with ``CKA_ID`` = the kid (its RFC
7638 thumbprint, ASCII) and ``CKA_LABEL`` = ``keyrotd/<keyset>/<creation time, unix seconds>``:
keyrotd finds a key by its kid, knows when it made it (PKCS#11 objects carry no creation time of
their own), and never touches an object whose label it did not write.

One logged-in session serves the process, guarded by a lock: a PKCS#11 session is not for
concurrent use, and python-pkcs11 initialises the module with ``C_Initialize(NULL)``, which
promises it one calling thread at a time (SoftHSM2 then turns its own locking off), so a pool of
sessions used at once would break that promise. The daemon's ``POST /sign`` calls come from one
thread (keyrotd/daemon/custody_calls.py); the key objects are looked up once per kid and session.
A token that goes away (removed, logged out, restarted) makes the next operation
open a new session and log in again, and while that fails every operation raises
:class:`CustodyUnavailableError`, a temporary error: the JWKS, which never needs the token, keeps
being served. python-pkcs11 is the binding: typed objects and attributes, key generation and
signing with mechanism parameters (PSS) in one call, wheels on PyPI (docs/issuers.md says why).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyrotd.custody.interface import (
    CustodyError,
    CustodyKey,
    CustodyKeyGoneError,
    CustodyUnavailableError,
)
from keyrotd.keys import PRIVATE_MEMBERS, RSA_KEY_SIZES, thumbprint
from keyrotd.model import Jwk
from keyrotd.retries import TOKEN_OPEN

LABEL_PREFIX: Final = "keyrotd/"
RESTART_INTERVAL: Final = 1.0
"""Seconds between two restarts of the library while the token cannot be opened."""
_T = TypeVar("_T")

_CURVE_OIDS: Final = {
    "ES256": "secp256r1",
    "ES384": "secp384r1",
    "ES512": "secp521r1",
    "EdDSA": "1.3.101.112",  # Ed25519
}
_HASHES: Final[dict[str, Callable[[bytes], Any]]] = {
    "256": hashlib.sha256,
    "384": hashlib.sha384,
    "512": hashlib.sha512,
}


class Pkcs11Custody:
    """Keys in one PKCS#11 token, found by label; see the module docstring."""

    name = "pkcs11"

    def __init__(self, module: Path, token_label: str, pin: str) -> None:
        import pkcs11  # an optional role: loaded only when a keyset has pkcs11 custody

        self._pkcs11 = pkcs11
        self._module = module
        self._token_label = token_label
        self._pin = pin
        self._lock = threading.Lock()
        self._session: Any = None
        self._restarted_at = -RESTART_INTERVAL
        self._private: dict[str, Any] = {}
        """kid -> private key object of the current session (dropped with the session)."""

    # --- sessions -------------------------------------------------------------------------

    def _open(self) -> Any:
        """A new logged-in session. After a failure the library is started again (C_Finalize,
        C_Initialize) before the next try, at most once a second: a module may not see a token
        come back otherwise (SoftHSM2 does not, once its token directory went away), nor see a
        token another process is logging in to (SoftHSM2 again): see ``retries.TOKEN_OPEN``."""
        try:
            return self._open_session()
        except CustodyUnavailableError:
            if time.monotonic() - self._restarted_at < RESTART_INTERVAL:
                raise
        for failures in range(1, TOKEN_OPEN.attempts):
            self._restarted_at = time.monotonic()
            with contextlib.suppress(self._pkcs11.exceptions.PKCS11Error):
                self._pkcs11.lib(str(self._module)).reinitialize()
            try:
                return self._open_session()
            except CustodyUnavailableError:
                if failures + 1 >= TOKEN_OPEN.attempts:
                    raise
                time.sleep(TOKEN_OPEN.delay(failures).total_seconds())
        raise AssertionError("unreachable")

    def _open_session(self) -> Any:
        pkcs11 = self._pkcs11
        try:
            library = pkcs11.lib(str(self._module))
            token = library.get_token(token_label=self._token_label)
            try:
                return token.open(user_pin=self._pin, rw=True)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                # PKCS#11 logs in an application, not a session: another session of this
                # process is logged in already, and a new one shares that login.
                return token.open(rw=True)
        except pkcs11.exceptions.NoSuchToken as error:
            raise CustodyUnavailableError(
                f"pkcs11 custody: no token labelled {self._token_label!r} in {self._module}",
                "check custody.pkcs11_token_label and that the token is present",
            ) from error
        except pkcs11.exceptions.PinIncorrect as error:
            raise CustodyError(
                f"pkcs11 custody: the token {self._token_label!r} refused the PIN",
                "check custody.pkcs11_pin_file",
            ) from error
        except pkcs11.exceptions.PKCS11Error as error:
            raise CustodyUnavailableError(
                f"pkcs11 custody: cannot open token {self._token_label!r}: {type(error).__name__}",
                "check that the token is present and the module works (pkcs11-tool -L)",
            ) from error

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        self._private.clear()
        if session is not None:
            with contextlib.suppress(self._pkcs11.exceptions.PKCS11Error):
                session.close()  # the token may have gone away: nothing left to close

    def _run(self, what: str, operation: Callable[[Any], _T]) -> _T:
        """``operation(session)`` on the logged-in session, opened anew once when the token
        lost the previous one (removed, restarted, logged out)."""
        pkcs11 = self._pkcs11
        lost = (
            pkcs11.exceptions.SessionHandleInvalid,
            pkcs11.exceptions.SessionClosed,
            pkcs11.exceptions.TokenNotPresent,
            pkcs11.exceptions.DeviceRemoved,
            pkcs11.exceptions.UserNotLoggedIn,
            pkcs11.exceptions.DeviceError,
            pkcs11.exceptions.GeneralError,
            pkcs11.exceptions.ObjectHandleInvalid,
            pkcs11.exceptions.KeyHandleInvalid,
        )
        with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._session = self._open()
                try:
                    return operation(self._session)
                except lost as error:
                    self._drop_session()
                    if attempt == 2:
                        raise CustodyUnavailableError(
                            f"pkcs11 custody: {what} failed: the token went away "
                            f"({type(error).__name__})",
                            "keyrotd retries; check the token",
                        ) from error
                except pkcs11.exceptions.FunctionFailed as error:
                    # CKR_FUNCTION_FAILED: "could not be performed", e.g. SoftHSM2 meeting an
                    # object file another process holds: try again later.
                    raise CustodyUnavailableError(
                        f"pkcs11 custody: {what} failed in token {self._token_label!r} "
                        "(FunctionFailed)",
                        "try again; check the token if it persists",
                    ) from error
                except pkcs11.exceptions.PKCS11Error as error:
                    raise CustodyError(
                        f"pkcs11 custody: {what} failed in token {self._token_label!r} "
                        f"({type(error).__name__})",
                        "check the token and its module (pkcs11-tool -L)",
                    ) from error
        raise AssertionError("unreachable")

    # --- the custody --------------------------------------------------------------------

    def create(self, keyset: str, alg: str, rsa_key_size: int, now: datetime) -> CustodyKey:
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11.util.ec import encode_named_curve_parameters

        if alg.startswith(("RS", "PS")) and rsa_key_size not in RSA_KEY_SIZES:
            raise CustodyError(
                f"rsa_key_size {rsa_key_size} is not allowed", "use 2048, 3072 or 4096"
            )
        created = int(now.timestamp())
        label = f"{LABEL_PREFIX}{keyset}/{created}"
        private_template = {
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.PRIVATE: True,
        }

        def generate(session: Any) -> tuple[str, Jwk]:
            public_template: dict[Any, Any] = {Attribute.VERIFY: True}
            if alg.startswith(("RS", "PS")):
                key_type, size, mechanism = KeyType.RSA, rsa_key_size, None
            else:
                edwards = alg == "EdDSA"
                public_template[Attribute.EC_PARAMS] = encode_named_curve_parameters(
                    _CURVE_OIDS[alg]
                )
                key_type = KeyType.EC_EDWARDS if edwards else KeyType.EC
                size, mechanism = None, Mechanism.EC_EDWARDS_KEY_PAIR_GEN if edwards else None
            try:
                public, private = session.generate_keypair(
                    key_type,
                    size,
                    store=True,
                    label=label,
                    id=os.urandom(16).hex().encode(),
                    mechanism=mechanism,
                    public_template=public_template,
                    private_template=private_template,
                )
            except self._pkcs11.exceptions.MechanismInvalid as error:
                raise CustodyError(
                    f"pkcs11 custody: token {self._token_label!r} cannot make {alg} keys",
                    "use an algorithm the token supports, or storage custody",
                ) from error
            try:
                jwk = _public_jwk(public, alg)
            except ValueError as error:  # an attribute read back empty (a token under load)
                for half in (public, private):
                    with contextlib.suppress(self._pkcs11.exceptions.PKCS11Error):
                        half.destroy()  # else an orphan the sweep destroys
                raise CustodyUnavailableError(
                    f"pkcs11 custody: token {self._token_label!r} answered an unreadable "
                    f"public key for a new {alg} key",
                    "try again; check the token if it persists",
                ) from error
            kid = thumbprint(jwk)
            # The kid is known only now: the objects take it as their CKA_ID. A crash before this
            # leaves objects with a random id that no document names: orphans a sweep destroys.
            public[Attribute.ID] = kid.encode()
            private[Attribute.ID] = kid.encode()
            self._private[kid] = private
            return kid, jwk

        for failures in range(1, TOKEN_OPEN.attempts + 1):
            try:
                kid, jwk = self._run("creating a key", generate)
                break
            except CustodyUnavailableError:  # a new key: nothing refers to it, make it again
                if failures == TOKEN_OPEN.attempts:
                    raise
                time.sleep(TOKEN_OPEN.delay(failures).total_seconds())
        return CustodyKey(
            kid=kid,
            alg=alg,
            public_jwk={**jwk, "kid": kid, "alg": alg, "use": "sig"},
            handle=kid,
            created_at=datetime.fromtimestamp(created, UTC),
        )

    def sign(self, handle: str, alg: str, signing_input: bytes) -> bytes:
        from pkcs11 import MGF, Mechanism

        bits = alg[2:] if alg != "EdDSA" else ""

        def sign_with(session: Any) -> bytes:
            private = self._private.get(handle)
            if private is None:
                private = self._private[handle] = self._find_private(session, handle)
            if alg.startswith("RS"):
                mechanism = getattr(Mechanism, f"SHA{bits}_RSA_PKCS")
                return bytes(private.sign(signing_input, mechanism=mechanism))
            if alg.startswith("PS"):
                return bytes(
                    private.sign(
                        signing_input,
                        mechanism=getattr(Mechanism, f"SHA{bits}_RSA_PKCS_PSS"),
                        mechanism_param=(
                            getattr(Mechanism, f"SHA{bits}"),
                            getattr(MGF, f"SHA{bits}"),
                            int(bits) // 8,
                        ),
                    )
                )
            if alg == "EdDSA":
                return bytes(private.sign(signing_input, mechanism=Mechanism.EDDSA))
            # ECDSA: the token signs the digest and answers r‖s, JOSE's format already.
            digest = _HASHES[bits](signing_input).digest()
            return bytes(private.sign(digest, mechanism=Mechanism.ECDSA))

        return self._run("signing", sign_with)

    def _find_private(self, session: Any, handle: str) -> Any:
        from pkcs11 import Attribute, ObjectClass

        found = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: handle.encode()}
        )
        mine = [obj for obj in found if _ours(obj)]
        if not mine:
            raise CustodyKeyGoneError(
                f"pkcs11 custody: key {handle} is not in token {self._token_label!r}",
                "another writer destroyed it: read storage again",
            )
        return mine[0]

    def destroy(self, handle: str) -> None:
        from pkcs11 import Attribute

        def destroy_in(session: Any) -> None:
            self._private.pop(handle, None)
            for obj in list(session.get_objects({Attribute.ID: handle.encode()})):
                if _ours(obj):
                    obj.destroy()

        self._run("destroying a key", destroy_in)

    def held(self, keyset: str) -> list[CustodyKey]:
        from pkcs11 import Attribute, ObjectClass

        prefix = f"{LABEL_PREFIX}{keyset}/"

        def list_in(session: Any) -> list[CustodyKey]:
            # Public halves too: a writer killed inside the key generation (the public object
            # stored, the private not yet) or inside a destruction leaves a public half alone,
            # which the sweep must find to destroy.
            keys: dict[str, CustodyKey] = {}
            for kind in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for obj in session.get_objects({Attribute.CLASS: kind}):
                    try:
                        label = str(obj[Attribute.LABEL])
                        kid = bytes(obj[Attribute.ID]).decode("ascii", "replace")
                    except self._pkcs11.exceptions.PKCS11Error:
                        # an object whose attributes cannot be read (a writer killed while the
                        # token wrote it): not one keyrotd can tell is its own, so never touched
                        continue
                    created = label[len(prefix) :]
                    if not label.startswith(prefix) or not created.isdigit():
                        continue
                    keys.setdefault(
                        kid,
                        CustodyKey(
                            kid=kid,
                            alg="",
                            public_jwk={},
                            handle=kid,
                            created_at=datetime.fromtimestamp(int(created), UTC),
                        ),
                    )
            return list(keys.values())

        return self._run("listing keys", list_in)

    def close(self) -> None:
        with self._lock:
            self._drop_session()


def _ours(obj: Any) -> bool:
    from pkcs11 import Attribute

    try:
        return str(obj[Attribute.LABEL]).startswith(LABEL_PREFIX)
    except Exception:  # an object without a readable label is not ours
        return False


def _public_jwk(public: Any, alg: str) -> Jwk:
    """The public JWK of a token's public key object (RFC 7517 members only)."""
    from asn1crypto.core import OctetString
    from pkcs11 import Attribute
    from pkcs11.util.ec import encode_ec_public_key

    if alg.startswith(("RS", "PS")):
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        )
        jwk = RSAKey.import_key(numbers.public_key()).as_dict(private=False)
    elif alg == "EdDSA":
        from cryptography.hazmat.primitives.asymmetric import ed25519

        point = bytes(OctetString.load(public[Attribute.EC_POINT]))
        jwk = OKPKey.import_key(ed25519.Ed25519PublicKey.from_public_bytes(point)).as_dict(
            private=False
        )
    else:
        ec_key = serialization.load_der_public_key(encode_ec_public_key(public))
        jwk = ECKey.import_key(ec_key).as_dict(private=False)  # type: ignore[arg-type]
    return {k: str(v) for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
