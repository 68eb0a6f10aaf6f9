# /// script
# requires-python = ">=3.11"
# dependencies = ["six==1.16.0"]
# ///
"""A uv script: its inline metadata is the image's dependency list."""
import six

print(six.__version__)
