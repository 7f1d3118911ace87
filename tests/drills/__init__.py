"""Operational drills run on this machine with real processes: `make upgrade-drill` (tests/drills/upgrade_drill.py)."""
