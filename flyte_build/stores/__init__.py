"""Storage: everything flyte-build keeps on disk or in a remote object store.

    cache_dir      where the local cache lives (`os` only: the no-op snapshot uses it)
    local_cache    the local cache directory: the content store (blobs by sha256)
                   and action entries by key, and the documents kept beside them
    maintenance    `cache stats`, `cache verify` and `cache gc` over the local cache
    action_entry   an action entry and the schema every entry read is checked against
    action_cache   an action's lookup: the local cache, then the shared one
    shared_cache   the shared cache on a remote store, untrusted on every read
    signing        signatures over shared action entries
    remote         remote object stores (file://, s3://, gs://, az://) over fsspec
    file_digests   file digests with a stat cache, so unchanged files are not read

This package imports nothing on its own: `snapshot` imports `cache_dir` before
anything else is loaded.
"""
