"""starlette_file's app for a 16 KiB file: a stylesheet or a script, where a request's cost is more the
response's setting-up than its bytes."""
from starlette_file import file_app

app = file_app(16 << 10)
