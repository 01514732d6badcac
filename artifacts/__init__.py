"""Versioned, checksummed, atomically published artifacts (shared by training, serving, pipelines).

The artifact *store* (``store.py``) and the file checksum list (``checksums.py``) are the
only code that training and serving share; neither imports the other. Each artifact's own
manifest schema lives with the code that defines that artifact
(``training.export`` for models, ``serving.index.artifact`` for indexes).
"""
