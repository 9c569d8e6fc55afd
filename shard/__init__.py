"""The store node's shards: etcd's MVCC key-value semantics over slot-keyed storage.

Pure parts: ``slots`` (hash tags, slot ranges), ``hlc`` (revisions),
``keys`` (storage layout), ``types`` and ``codec`` (requests, responses, the
log-entry encoding), ``mvcc``/``mvcc_range``/``txn`` (reads, compaction,
execution), ``statemachine`` (the apply step), ``snapshot``, and ``engine``
(the KvEngine seam and its in-memory twin), ``errors`` (the store's one
error tree), ``quota``, ``hashkv``, ``leasekeys``. Runtime: ``rocks`` (the
RocksDB engine), ``space`` (measuring it), ``convert`` and ``service``
(protobuf and the Store servicers), ``node/`` (the store node: one module per
job behind the ``StoreNode`` façade) and ``agent/`` (the store's side of the
conversation with placement).
"""
