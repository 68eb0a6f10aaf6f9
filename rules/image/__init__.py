"""image:<env>: the container image — its rule, the Dockerfile rendering and the Docker engine it drives."""
