"""Benchmarks: a generator of synthetic Flyte monorepos and a runner that
times flyte-build against flyte's own bundling and the tar|gzip floor."""
