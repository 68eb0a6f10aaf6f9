"""The one place that touches flyte's SDK, private parts included.

Everything flyte-build knows about flyte objects comes through here as plain
data (see `model`), one module per concern:

    version_contract  the supported flyte versions (SUPPORTED_FLYTE)
    discovery         flyte initialised offline; environments, images, tasks as data
    serialization     task and app specs for deploys, as templates with placeholders
    backend_client    flyte's config file and credentials; the control plane's client
    runtime_check     check:<env>'s program, run inside the env's image

`tests/test_flyte_adapter.py` is the contract test of the whole package, so
an SDK change that breaks an assumption fails there first.

The package is imported only in child processes (discovery, serialization,
which run in the project's interpreter with a staged copy of flyte_build:
every module here imports only the standard library at module level) and by
rules that need flyte (deploy, check); a no-op build never imports it. The
names below are re-exported for callers that use several concerns.
"""

from __future__ import annotations

from .backend_client import (
    DISCOVERY_SETTINGS, SECRET_SETTINGS, Backend, auth_type_name, client_kwargs, discovery_settings, make_client,
    read_flyte_config, scrub,
)
from .discovery import (
    app_to_data, declaring_file, env_to_data, environment_types, forget_environments, image_to_data,
    init_for_discovery, is_app, is_environment, loaded_environments, note_environment_creation, plain, task_to_data,
    type_plugins_registered,
)
from .runtime_check import CHECK_MARKER, check_in_image, check_program
from .serialization import (
    PLACEHOLDER_BUNDLE, PLACEHOLDER_DOMAIN, PLACEHOLDER_ORG, PLACEHOLDER_PROJECT, PLACEHOLDER_VERSION, NotSupported,
    _image_cache_arg, app_source_link, auto_image_uri, image_placeholder, render_task_spec, resolve_image_uri,
    serialize_app_template, serialize_env_templates, task_spec_message,
)
from .version_contract import SUPPORTED_FLYTE, check_version, flyte_version

__all__ = [
    "DISCOVERY_SETTINGS", "SECRET_SETTINGS", "Backend", "auth_type_name", "client_kwargs", "discovery_settings",
    "make_client", "read_flyte_config", "scrub",
    "app_to_data", "declaring_file", "env_to_data", "environment_types", "image_to_data", "init_for_discovery",
    "is_app", "is_environment", "loaded_environments", "forget_environments", "note_environment_creation", "plain", "task_to_data", "type_plugins_registered",
    "CHECK_MARKER", "check_in_image", "check_program",
    "PLACEHOLDER_BUNDLE", "PLACEHOLDER_DOMAIN", "PLACEHOLDER_ORG", "PLACEHOLDER_PROJECT", "PLACEHOLDER_VERSION",
    "NotSupported", "_image_cache_arg", "app_source_link", "auto_image_uri", "image_placeholder", "render_task_spec",
    "resolve_image_uri", "serialize_app_template", "serialize_env_templates", "task_spec_message",
    "SUPPORTED_FLYTE", "check_version", "flyte_version",
]
