"""The configuration (CONTRACT section 2): the names every other module imports from here."""

from keyrotd.config.models import (
    KeysetSettings,
    LoggingSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    check_policy,
    find_config_file,
    issuer_path,
    load_settings,
    split_admin_listen,
    split_listen,
)

__all__ = [
    "KeysetSettings",
    "LoggingSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "check_policy",
    "find_config_file",
    "issuer_path",
    "load_settings",
    "split_admin_listen",
    "split_listen",
]
