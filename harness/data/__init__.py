"""Data: loading user files (loaders) and real datasets prepared once into the cache (prepared)."""
