"""The path of a message: intake checks, segments, SMPP link, and the built-in SMSC simulator.

No Flask and no `backoffice` imports here (STYLE.md §5); the database side lives in
`backoffice/services/` and reaches this package through plain values and small protocols.
"""
