"""Names shared by the audit's library and its command line (no heavy imports here)."""

METHODS = ("exact", "fast", "frank_wolfe")
STATUSES = ("argmaxable", "tie", "unargmaxable", "unknown")
