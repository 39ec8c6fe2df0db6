"""paratick's I/O side: the worker runtime, the websocket game server and the ``paratick`` CLI."""
