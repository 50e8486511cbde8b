"""Records: the decision and door event log (SQLite) and snapshots."""
