"""Every process of a pipeline run fails on a local file call on a URI (test-only).

Put on PYTHONPATH (with the checkout, for `tests`) by tests/pipeline/test_bucket_e2e.py:
each Python process the run starts imports this at start-up and arms the audit hook of
tests/components/no_local_io.py for its whole life, so `open("gs://...")` or
`os.makedirs("gs://...")` raises LocalIOOnURI instead of creating ./gs:/... quietly.
"""

from tests.components.no_local_io import arm_for_process

arm_for_process()
