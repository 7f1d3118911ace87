"""What both planes share: the call record, its status rules, the store, stream tokens, settings."""

__version__ = "0.2.0"  # the one place the release is named: pyproject, /healthz and the API read it
