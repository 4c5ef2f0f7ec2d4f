"""Worker classes as projects write them (Uvicorn's deployment docs): UvicornWorker subclasses that set
Uvicorn's options through CONFIG_KWARGS; and an app that says what it was given."""
import asyncio

from uvicorn.workers import UvicornWorker
from uvicorn_worker import UvicornWorker as PackagedUvicornWorker


class MountedWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "off", "root_path": "/api"}


class UvloopWorker(PackagedUvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools"}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        raise RuntimeError("the lifespan ran though CONFIG_KWARGS turned it off")
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"root_path={scope['root_path']} loop={loop}".encode()})
