"""The encrypted read store: SQLCipher database, its key file and its migrations."""

from .errors import KeyFileError, StoreError, StoreFullError
from .keys import create_key_file, load_key
from .reads import AddResult, ReadStore, StoredRead, StoreStatus

__all__ = [
    "AddResult",
    "KeyFileError",
    "ReadStore",
    "StoreError",
    "StoreFullError",
    "StoreStatus",
    "StoredRead",
    "create_key_file",
    "load_key",
]
