"""keyrotd's tests, a package so that modules import each other as ``tests.<dir>.<module>``."""
