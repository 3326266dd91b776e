"""Tests a storage backend written anywhere can run (docs/storage.md, Writing a backend).

- :mod:`keyrotd.testing.storage`: the contract every backend passes, G8 included; a test module
  subclasses :class:`~keyrotd.testing.storage.StorageContract` and gives it a store.
- :mod:`keyrotd.testing.memory`: the smallest complete backend, kept in memory, which passes it.

Only this package imports pytest; keyrotd itself never imports it.
"""
