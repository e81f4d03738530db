"""Tiny ASGI apps the benchmark compares our service against (``uvicorn --factory``).

* ``bare``: the framework ceiling, the same strict body validation, a constant answer.
* ``bare_model``: ``bare`` plus the model we serve and our response model, no guards.
* ``tutorial``: the tutorial implementation, ``async def`` + ``model.predict`` on a list.
* ``busy``: (a) plus a fixed CPU cost per request, to read latency under saturation.

None of them overrides anything in our app: a baseline must never be slower than the
real thing for an artificial reason.
"""
