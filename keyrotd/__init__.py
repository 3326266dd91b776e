"""keyrotd: a signing-key rotation daemon with an overlapping JWKS."""

from keyrotd.errors import KeyrotdError

__version__ = "0.1.0"
__all__ = ["KeyrotdError", "__version__"]
