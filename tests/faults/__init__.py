"""Fault injection against real processes on loopback (see docs/faults.md)."""
