"""Every Redis key format and value codec that serving and training share.

TF-free and serving/training-free, like ``artifacts/``: the recall server (serving), the
refresher and the pipelines (training) import it, and neither imports the other. The
written spec is docs/redis.md; tests/unit/test_keyspace.py pins every format byte for byte.

- ``user_vectors``: ``recall:uv:<model_version>:<user_id>`` and ``recall:uvmeta:<model_version>``
- ``histories``: ``recall:hist:<user_id>``, each user's recent item ids
- ``events``: the ``recall:events`` stream, its consumer group, the touched-users set
"""
