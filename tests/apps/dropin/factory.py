"""An app factory, as Flask and Superset use them: `factory:create_app('hey', excl=True)`. `/print`
prints and `/log` logs through Python's logging (for capture_output and logconfig_dict)."""
import logging
import os

LOADED_IN = os.getpid()
log = logging.getLogger("factory")


def create_app(greeting="hello", excl=False):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/print":
            print(f"printed by the app in {os.getpid()}", flush=True)
        elif path == "/log":
            log.warning("logged by the app in %s", os.getpid())
        elif path == "/hang":
            import time
            time.sleep(3600)
        start_response("200 OK", [("Content-Type", "text/plain")])
        text = f"{greeting}{'!' if excl else ''} loaded-in={LOADED_IN} served-by={os.getpid()} env={os.environ.get('DROPIN_FROM_CONFIG')}"
        return [text.encode()]
    return app


app = create_app()
