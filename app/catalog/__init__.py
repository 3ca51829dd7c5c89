"""The catalog store (SQLite through sqlite-utils): schema, migrations, records, CSV I/O."""

from app.catalog.records import (  # noqa: F401
    Action,
    BoxRecord,
    CalibrationRecord,
    Identification,
    Individual,
    LocalFeatureRecord,
    MatchDecision,
    ModelRecord,
    Photo,
)
from app.catalog.schema import SCHEMA_VERSION  # noqa: F401
from app.catalog.store import (  # noqa: F401
    Catalog,
    CatalogError,
    CatalogLockedError,
    CatalogTooNewError,
    ReadOnlyError,
)
