"""Storage: run folders (safety, locks, manifests), the chunked trajectory store, recording."""
