"""deploy:<env>: plans and deploys to a Flyte backend."""
