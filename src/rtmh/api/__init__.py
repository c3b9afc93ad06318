"""The REST API (FastAPI): the hub's programmable surface, served by `rtmh api` and `rtmh up`.

Role in the flow: the last stop for people. Routes are thin: they parse and check the request's
shape (pydantic), call :mod:`rtmh.service` for anything that touches data, and answer with JSON
or RFC 9457 problem documents. The live stream reads what the database NOTIFYs.
"""
