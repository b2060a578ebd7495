"""Test pipelines: real child processes speaking the manager's queue protocol.

They live in the package (``stream_manager_patches._pipelines``) because the ``bench``
command runs the same behaviours; this module keeps the tests' short import name.
"""

from stream_manager_patches._pipelines import (  # noqa: F401
    BEHAVIOURS,
    AmbiguousTruth,
    EqualityRaises,
    run,
)
