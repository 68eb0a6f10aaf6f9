"""Storage: everything flyte-build keeps on disk or in a remote object store.

    cache_dir         where the local cache lives (`os` only: the no-op snapshot uses it)
    local_store       the local cache directory (`LocalStore`): the content store (blobs
                      by sha256) and action entries by key, and the documents kept beside them
    maintenance       `cache stats`, `cache verify` and `cache gc` over the local cache
    action_entry      an action entry and the schema every entry read is checked against
    two_tier_cache    an action's lookup (`Cache`): the local cache, then the shared one
    shared_cache      the shared cache on a remote store, untrusted on every read
    signing           signatures over shared action entries
    remote_stores     remote object stores (file://, s3://, gs://, az://) over fsspec
    s3_reads          S3 reads without s3fs's async stack: `s3_plain`'s, else botocore's
    s3_plain          S3 reads over the standard library, signed with SigV4 (no botocore)
    sigv4             the SigV4 signature of those reads (as botocore signs them)
    file_digests      file digests with a stat cache, so unchanged files are not read
    documents         the shared cache's JSON documents: read with bounds, signed
    build_manifest    a build's action entries in one shared object
    shared_discovery  discovery results through the shared cache, keyed by content
    shared_affected   a revision's target summary through the shared cache
    snapshot          the no-op `build --json` answered from one file of stats

This package imports nothing on its own: `snapshot` imports `cache_dir` before
anything else is loaded.
"""
