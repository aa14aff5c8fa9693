"""Builders for what tests need: encoded images, a real Transform output, a real export.

Everything is generated: no dataset or pretrained weights are needed. The builders are
defined once, in components/samples.py (the benches use them too); these are their names
in the tests.
"""

from __future__ import annotations

from components.samples import (  # noqa: F401 - the tests' names for the package's builders
    PIL_FORMATS,
    ROOT,
    SCHEMA_PATH,
    encode,
    image_array,
    image_bytes,
    raw_row,
    raw_schema,
)
from components.samples import export_untrained_model as export_test_model  # noqa: F401
from components.samples import transform_output as build_transform_output  # noqa: F401
