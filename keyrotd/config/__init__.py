"""The configuration (README.md, Configuration): a TOML file, overridden by ``KEYROTD_*`` variables.

The package's parts, each with one job:

- :mod:`~keyrotd.config.models`: the frozen models and the rules across fields;
- :mod:`~keyrotd.config.fields`: the value of each single setting (paths, URLs, addresses...);
- :mod:`~keyrotd.config.loading`: finding and reading the file and the environment;
- :mod:`~keyrotd.config.messages`: the one-line error naming the source, the setting and the fix;
- :mod:`~keyrotd.config.policy`: refusing settings that cannot keep the guarantees;
- :mod:`~keyrotd.config.storage_types`: which ``[storage]`` keys belong to which type;
- :mod:`~keyrotd.config.capacity`: the keys a policy keeps in a JWKS, and its documents' size.

Other modules import from here, not from the parts.
"""

from keyrotd.config.fields import RSA_KEY_SIZES, issuer_path, split_admin_listen, split_listen
from keyrotd.config.loading import CONFIG_VARIABLE, DEFAULT_FILE, find_config_file, load_settings
from keyrotd.config.messages import missing_socket_directory
from keyrotd.config.models import (
    ENV_PREFIX,
    KeysetSettings,
    LoggingSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from keyrotd.config.policy import check_policy

__all__ = [
    "CONFIG_VARIABLE",
    "DEFAULT_FILE",
    "ENV_PREFIX",
    "RSA_KEY_SIZES",
    "KeysetSettings",
    "LoggingSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "check_policy",
    "find_config_file",
    "issuer_path",
    "load_settings",
    "missing_socket_directory",
    "split_admin_listen",
    "split_listen",
]
