"""Outbound connections the kernel makes for agents and remotes (an edge: core only below it).

``pinned``: resolve a name once, let the caller's rule decide on the answers, connect to the
address it chose (no DNS rebinding between the check and the connection).
"""
