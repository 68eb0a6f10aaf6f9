"""Archives and the files that go into them: the deterministic tar.gz writer, the
check of a shared archive, safe extraction, the bundle file walk, and artifact copies.
"""
