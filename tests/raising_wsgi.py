"""bulkproc's app with one route that raises, for the log tests: its traceback must reach the log as a field."""

from bulkproc import create_app

app = create_app()


@app.get("/_test/raise")
def raise_for_the_log() -> str:
    raise RuntimeError("raised for the log test")
