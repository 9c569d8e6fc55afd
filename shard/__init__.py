"""The store node's shards: etcd's MVCC key-value semantics over slot-keyed storage.

Pure parts: ``slots`` (hash tags, slot ranges), ``hlc`` (revisions),
``keys`` (storage layout), ``types`` and ``codec`` (requests, responses, the
log-entry encoding), ``mvcc``/``mvcc_range``/``txn`` (reads, compaction,
execution), ``statemachine`` (the apply step), ``snapshot``, and ``engine``
(the KvEngine seam and its in-memory twin). ``rocks`` is the RocksDB engine.
"""
