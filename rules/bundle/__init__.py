"""bundle:<env>: the code bundle — its rule, and uploading bundles to `storage`."""
