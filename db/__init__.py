"""Database plumbing shared by the stores: engines, sessions and column types.

``auth`` (credentials) and ``monitoring`` (the prediction log) keep their tables in
one database; both build on this package, which imports neither.
"""
