"""Services of the sample monorepo, one package per service."""
