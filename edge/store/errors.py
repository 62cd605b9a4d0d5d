"""Exceptions of the store: the daemon stops on a key or store error and keeps running on a full disk."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be opened or written: wrong key, missing or damaged file, I/O error."""


class StoreFullError(StoreError):
    """The disk is too full to store a read; nothing was written and the store recovers when space returns."""


class KeyFileError(StoreError):
    """The database key is missing, unsafe (readable by others) or malformed. Messages never contain the key."""
