"""The item catalogue: near-duplicate detection (MinHash + LSH banding, SimHash) and the
canonical-id map that training, the model artifact and the recall servers share.

Imports neither ``training`` nor ``serving``; ``catalogue.canonical_map`` is stdlib-only so
the TensorFlow-free server may read the map from a model artifact.
"""
