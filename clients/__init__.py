"""Bot clients that connect to ``paratick serve`` over websockets."""
