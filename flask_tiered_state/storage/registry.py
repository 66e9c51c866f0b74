"""Backends by URL: each tier is configured with a URL whose scheme names its backend.

=============================  ===========  ==================================================
URL                            tier         repository
=============================  ===========  ==================================================
``memory://``                  HOT          :class:`~.memory.MemoryStateRepository`
``redis://host:6379/0``        HOT          :class:`~.redis.RedisStateRepository`
(``rediss://``, ``unix://``)
``postgresql://u@host/db``     WARM         :class:`~.sql.SQLStateRepository` (psycopg 3)
``sqlite:////path/file.db``    WARM         :class:`~.sql.SQLStateRepository`
``s3://bucket/prefix?...``     COLD         :class:`~.s3.S3StateRepository`
``file:///path/to/dir``        COLD         :class:`~.filesystem.FilesystemStateRepository`
=============================  ===========  ==================================================

A backend is a *factory*, ``factory(url, options, context) -> StateRepository``, found by
the URL's scheme (for SQLAlchemy URLs, the part before ``+driver``): first among those
registered with :func:`register_backend`, then the built-in ones (imported only when
used, so the core install never imports redis-py or boto3), then the entry points of the
group ``flask_tiered_state.backends`` that installed packages declare (name: the
scheme, value: ``module:factory``). An unknown scheme raises
:class:`~flask_tiered_state.errors.ConfigurationError` listing the known ones; a backend
whose client package is missing names the extra to install.

``options`` are the backend's own keyword arguments (``TIERED_STATE_HOT_OPTIONS`` and
the like); a name the backend does not take is refused with the list of those it takes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import BackendContext, BackendFactory, StateCategory, StateRepository, check_options

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendContext",
    "BackendFactory",
    "backend_schemes",
    "check_backend",
    "check_options",
    "default_url",
    "register_backend",
    "repository_from_url",
]

#: The entry point group third-party backends declare their schemes in.
ENTRY_POINT_GROUP = "flask_tiered_state.backends"

#: The file the embedded WARM tier keeps in ``local_dir``, and the COLD directory.
SQLITE_FILE = "tiered_state.sqlite3"
COLD_DIRECTORY = "cold"


# scheme -> (module, factory, extra to install, the packages that extra brings)
_BUILTIN: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "memory": (".memory.repository", "from_url", None, ()),
    "redis": (".redis.repository", "from_url", "redis", ("redis", "hiredis")),
    "rediss": (".redis.repository", "from_url", "redis", ("redis", "hiredis")),
    "unix": (".redis.repository", "from_url", "redis", ("redis", "hiredis")),
    "postgresql": (".sql.repository", "from_url", "postgres", ("psycopg", "psycopg_binary")),
    "postgres": (".sql.repository", "from_url", "postgres", ("psycopg", "psycopg_binary")),
    "sqlite": (".sql.repository", "from_url", None, ()),
    "s3": (".s3.repository", "from_url", "s3", ("boto3", "botocore")),
    "file": (".filesystem.repository", "from_url", None, ()),
}
_REGISTERED: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make URLs with ``scheme`` build their repository with ``factory`` (replacing a
    built-in or earlier backend of that scheme)."""
    if not isinstance(scheme, str) or not scheme.isidentifier() or scheme != scheme.lower():
        raise ConfigurationError(
            f"A backend scheme is a lowercase name such as 'etcd', not {scheme!r}."
        )
    if not callable(factory):
        raise ConfigurationError(f"The factory of scheme {scheme!r} must be callable.")
    _REGISTERED[scheme] = factory


def backend_schemes() -> list[str]:
    """Every scheme a URL can have: registered, built in, or declared by entry points."""
    declared = {point.name for point in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted({*_REGISTERED, *_BUILTIN, *declared})


def scheme_of(url: str) -> str:
    """The backend scheme of ``url`` (SQLAlchemy's ``postgresql+psycopg`` is ``postgresql``)."""
    return urlsplit(url).scheme.partition("+")[0].lower()


def default_url(category: StateCategory, local_dir: Path | None) -> str:
    """The embedded default of a tier: process memory for HOT, a SQLite file and a
    directory in ``local_dir`` for WARM and COLD."""
    if category is StateCategory.HOT:
        return "memory://"
    if local_dir is None:
        raise ConfigurationError(
            f"The {category} tier has no URL, and its embedded default needs local_dir: give "
            f"the {category} tier's URL, or local_dir."
        )
    local_dir.mkdir(parents=True, exist_ok=True)
    if category is StateCategory.WARM:
        return f"sqlite:///{local_dir.absolute() / SQLITE_FILE}"
    return (local_dir.absolute() / COLD_DIRECTORY).as_uri()


def repository_from_url(
    url: str, options: Mapping[str, Any] | None, context: BackendContext
) -> StateRepository:
    """The repository of the backend ``url`` names, built with ``options``.

    :raises ConfigurationError: the URL or an option is invalid, the scheme is unknown,
        or the backend's package is not installed.
    """
    _check_shape(url, options, context.category)
    factory = _factory(scheme_of(url), context.category)
    repository = factory(url, dict(options or {}), context)
    if repository.category is not context.category:
        repository.close()
        raise ConfigurationError(
            f"The backend of {_shown(url)} built a {repository.category} repository for the "
            f"{context.category} tier."
        )
    return repository


_EXAMPLES = {
    StateCategory.HOT: "'redis://localhost:6379/0' or 'memory://'",
    StateCategory.WARM: "'postgresql://user@host/db' or 'sqlite:////path/state.db'",
    StateCategory.COLD: "'s3://bucket/prefix' or 'file:///path/to/dir'",
}


def check_backend(url: str, options: Mapping[str, Any] | None, context: BackendContext) -> None:
    """Check ``url`` and ``options`` without connecting anything (at ``init_app``): the
    scheme is served, the backend's package is installed, and the backend (when it has
    a ``parse_url`` beside its factory) accepts the URL and the options.

    :raises ConfigurationError: as :func:`repository_from_url` would.
    """
    _check_shape(url, options, context.category)
    factory = _factory(scheme_of(url), context.category)
    module = importlib.import_module(factory.__module__)
    parse = getattr(module, "parse_url", None)
    if parse is not None and getattr(module, "from_url", None) is factory:
        parse(url, dict(options or {}), context)


def _check_shape(url: object, options: object, category: StateCategory) -> None:
    if not isinstance(url, str) or ("://" not in url and not url.startswith("file:")):
        raise ConfigurationError(
            f"The {category} tier's URL must be a string such as {_EXAMPLES[category]}, "
            f"not {_shown(url)}."
        )
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(
            f"The {category} tier's options must be a dict of keyword arguments of its "
            f"backend, not {type(options).__name__}."
        )


def _shown(url: object) -> str:
    """``url`` for a message: without the user and password."""
    if not isinstance(url, str):
        return repr(url)
    parts = urlsplit(url)
    if not parts.scheme:
        return repr(url[:40])
    host = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{host}{parts.path}")


def _factory(scheme: str, category: StateCategory) -> BackendFactory:
    registered = _REGISTERED.get(scheme)
    if registered is not None:
        return registered
    builtin = _BUILTIN.get(scheme)
    if builtin is not None:
        module_name, attribute, extra, packages = builtin
        try:
            module = importlib.import_module(module_name, __package__)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").partition(".")[0]
            if extra is None or missing not in packages:
                raise
            raise ConfigurationError(
                f"The {scheme}:// backend needs the {missing!r} package, which is not "
                f'installed; install it with pip install "flask-tiered-state[{extra}]".'
            ) from exc
        factory: BackendFactory = getattr(module, attribute)
        return factory
    for point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        loaded: BackendFactory = point.load()
        return loaded
    raise ConfigurationError(
        f"No backend serves {scheme}:// URLs (the {category} tier); known schemes: "
        f"{', '.join(s + '://' for s in backend_schemes())}. A package adds one with an "
        f"entry point in the {ENTRY_POINT_GROUP!r} group, or register_backend()."
    )
