"""An app factory, as Flask and Superset use them: `factory:create_app('hey', excl=True)`."""
import os

LOADED_IN = os.getpid()


def create_app(greeting="hello", excl=False):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        text = f"{greeting}{'!' if excl else ''} loaded-in={LOADED_IN} served-by={os.getpid()} env={os.environ.get('DROPIN_FROM_CONFIG')}"
        return [text.encode()]
    return app


app = create_app()
