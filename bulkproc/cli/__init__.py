"""The `bulkproc` command: the service's endpoints for scripts and terminals, over HTTP only.

Nothing here imports Flask, SQLAlchemy or the service's own layers, so the command starts fast
and needs only click, requests and rich (for the progress bar, loaded only on a terminal).
"""
