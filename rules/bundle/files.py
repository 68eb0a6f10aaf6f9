"""Which files an environment's bundle holds, by its copy style (flyte's own selection)."""

from __future__ import annotations

import os

from flyte_build.rule_api import inside


def has_bundle(env, view) -> bool:
    """Copy styles other than none have a bundle; none has one only for the
    env's `include` files (flyte's include-only bundle)."""
    return view.cfg.copy_style_for(env.name) != "none" or bool(env.include or view.cfg.include_for(env.name))


def bundle_files(env, view) -> dict[str, str]:
    """name -> path of the files in the env's bundle (empty for copy style none)."""
    style = view.cfg.copy_style_for(env.name)
    if style == "none":
        # flyte's include-only bundle: just the env's `include` files
        return dict(sorted(view.include_files(env).items()))
    if style == "all":
        files = dict(view.all_files.files)
    else:
        files = _inside_root(view, {view.rel(p): p for p in view.closure(env)})
    # an explicit include is the explicit way to ship a secret-looking file
    files.update(view.include_files(env))
    return dict(sorted(files.items()))


def _inside_root(view, files: dict[str, str]) -> dict[str, str]:
    """Less modules that are symlinks leading out of the root (an import
    resolves through them, but their bytes are not the repository's), as
    the walk leaves out such links for copy style `all`."""
    kept = {}
    for rel, path in files.items():
        if not inside(view.root, path, real=view.realpath(path)):
            view.warn(f"{rel}: symlink leads outside the root (to {os.path.realpath(path)}); skipped")
            continue
        kept[rel] = path
    return kept
