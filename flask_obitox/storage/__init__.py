"""S3 access: the client cache, the presigner and object calls."""

from .client import ObjectInfo, Storage, StorageRegistry, StorageSettings

__all__ = ["ObjectInfo", "Storage", "StorageRegistry", "StorageSettings"]
