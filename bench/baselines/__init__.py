"""Tiny ASGI apps the benchmark compares our service against (``uvicorn --factory``).

* ``bare``: the framework ceiling, the same strict body validation, a constant answer.
* ``tutorial``: the tutorial implementation, ``async def`` + ``model.predict`` on a list.
* ``unauthenticated``: our app with the security dependency replaced by a fixed caller.
* ``limiter_off``: our app with the rate limiter and the failed-auth throttle disabled.
* ``busy``: (a) plus a fixed CPU cost per request, to read latency under saturation.

The twins override our app only here, for measurement; tests never do this.
"""
