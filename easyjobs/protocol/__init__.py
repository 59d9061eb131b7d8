"""The wire protocol, sans-I/O: frames, their msgpack codec, authentication and session state.

Nothing here imports asyncio, sockets, Starlette, websockets or a database; ``proto/PROTOCOL.md``
is the normative description and this package follows it one to one.
"""
