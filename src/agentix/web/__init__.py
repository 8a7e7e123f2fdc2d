"""The web dashboard: plain ES modules, CSS and HTML under ``static/`` (no build step).

The kernel's HTTP server reads ``static/`` as package data (``kernel/http_api.py``) and serves
it at ``/`` and ``/ui/`` (``rpc/static.py``); no Python here runs in the kernel. docs/dashboard.md
explains the screens; the browser tests are in tests/dashboard/.
"""
