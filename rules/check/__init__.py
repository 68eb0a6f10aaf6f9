"""check:<env>: the env's tasks load from its bundle inside its image."""
