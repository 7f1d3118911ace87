"""What both planes share: the call record, its status rules, the store, stream tokens, settings."""
