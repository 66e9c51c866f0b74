"""Write the ``.. data::`` entries of ``docs/configuration.rst`` from ``SETTINGS``.

Run ``.venv/bin/python docs/gen_config.py`` after changing
:data:`flask_tiered_state.settings.SETTINGS`; it rewrites the part of the page
between the two marker comments and leaves the rest alone.
``tests/docs/test_config_docs.py`` fails while the page and ``SETTINGS`` disagree.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from flask_tiered_state.settings import SETTINGS, Setting

PAGE = Path(__file__).resolve().parent / "configuration.rst"
BEGIN = ".. BEGIN GENERATED SETTINGS: written by docs/gen_config.py from SETTINGS; do not edit."
END = ".. END GENERATED SETTINGS"

#: Extra reST appended to a key's entry: where to read more.
SEE_ALSO: dict[str, str] = {
    "HOT_URL": "``redis://`` needs the ``redis`` extra. See :ref:`backend-redis`.",
    "HOT_OPTIONS": "See :ref:`backend-redis` for Redis's options.",
    "WARM_URL": (
        "For PostgreSQL, ``postgresql://`` and ``postgresql+psycopg://`` select psycopg 3 "
        "(the ``postgres`` extra). See :ref:`backend-sql`."
    ),
    "WARM_OPTIONS": "See :ref:`backend-sql` for the SQL backend's options.",
    "COLD_URL": (
        "The bucket must exist; ``s3://`` needs the ``s3`` extra. GLACIER and DEEP_ARCHIVE "
        "storage classes are refused: their objects need a restore before every read. See "
        ":ref:`backend-s3`."
    ),
    "REGISTER_ERROR_HANDLERS": "See :doc:`rest-api`.",
    "COLD_OPTIONS": "See :ref:`backend-s3` and :ref:`the directory's <backend-filesystem>` for the options.",
    "KEY_PREFIX": "Only the Redis tier uses it; S3 objects are named with the prefix in "
    "the COLD URL's path.",
    "CACHE_MAX_BYTES": "The default is 64 MiB.",
    "DEMOTE_AFTER_IDLE_SECONDS": "The default is 30 days. Nothing demotes on a timer yet: "
    "the threshold is used by :meth:`TieredStore.demote_idle() "
    "<flask_tiered_state.storage.store.TieredStore.demote_idle>`.",
    "MAX_STATE_BYTES": "The default is 1 MiB, counted on the record's UTF-8 JSON text.",
    "METRICS": "See :ref:`metrics`.",
    "API_PREFIX": "See :doc:`rest-api`.",
    "DASHBOARD_PREFIX": "See :doc:`dashboard`.",
    "ACCESS_CONTROL": "See :ref:`access-control`.",
    "AUDIT_KEYS": "See :ref:`audit` and ``flask state audit`` in :doc:`cli`.",
    "CLI": "See :doc:`cli`.",
    "CREATE_TABLES": "See :ref:`migrations`.",
}


def _paragraph(text: str) -> list[str]:
    return textwrap.wrap(text, width=84, break_long_words=False, break_on_hyphens=False)


def render_entry(setting: Setting) -> str:
    """One key's ``.. data::`` entry."""
    lines = [
        f".. data:: {setting.key}",
        f"    :type: {setting.type}",
        f"    :value: {setting.default!r}",
        "",
    ]
    lines += ["    " + line for line in _paragraph(setting.doc)]
    extra = SEE_ALSO.get(setting.name)
    if extra:
        lines += ["", *("    " + line for line in _paragraph(extra))]
    return "\n".join(lines)


def render(settings: Iterable[Setting] = SETTINGS) -> str:
    """The generated part of the page, markers included."""
    entries = "\n\n".join(render_entry(s) for s in settings)
    return f"{BEGIN}\n\n{entries}\n\n{END}"


def generated_part(text: str) -> str:
    """The part of ``text`` between (and including) the markers."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    updated = text.replace(generated_part(text), render())
    if updated != text:
        PAGE.write_text(updated, encoding="utf-8")
        print(f"updated {PAGE}")
    else:
        print(f"{PAGE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
