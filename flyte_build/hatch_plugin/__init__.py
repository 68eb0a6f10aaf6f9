"""flyte-build as a hatchling plugin: the `flyte` builder (`hatch build -t flyte`)
and the `flyte` build hook (Flyte artifacts and their manifest alongside a wheel
or sdist). Registered through the `hatch` entry-point group; see hooks.py."""
