"""The deploy kind's command-line flags for the backend, as `flyte` takes them
over its config file: on `flyte-build deploy` and, through the kind's
registration, on `flyte-build config` (which shows what they set)."""

from __future__ import annotations

from .params import DeployParams


def backend_options(parser) -> None:
    """What `flyte` itself takes on its command line for the backend (over its config file)."""
    parser.add_argument("--endpoint", help="the Flyte endpoint (default: flyte's config.yaml)")
    parser.add_argument("--insecure", action="store_true", default=None, help="plain HTTP to the endpoint (flyte then sends no credentials)")
    parser.add_argument("--auth-type", metavar="TYPE", help="as `flyte --auth-type`: pkce, client-secret, device-flow, external-command")
    parser.add_argument("--org", help="the Flyte organization")


def params_from_args(args, **more) -> DeployParams:
    """The run's DeployParams from the parsed backend flags (and `more` fields)."""
    return DeployParams(endpoint=args.endpoint, insecure=args.insecure, auth_type=args.auth_type, org=args.org, **more)
