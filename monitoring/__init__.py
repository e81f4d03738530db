"""What the service observed: the prediction log, its export and drift, metrics, logs.

No web framework here: ``app/`` exposes these through its routes and middleware.
Imports ``db`` and ``ml``; never ``app`` or ``auth``.
"""
