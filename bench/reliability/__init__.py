"""`make reliability`: the gateway under injected faults, measured from outside (see docs/RELIABILITY.md)."""
