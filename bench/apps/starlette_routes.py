"""A Starlette app as apps are written: a few routes and a lifespan that sets state. The bench calls its
hello route; the rest is there so routing and request state cost what they cost. (No BaseHTTPMiddleware:
with one, anyio's task group and streams take ~95% of a request, the same under every server.)"""
import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "Hello, World!"}


async def hello(request):
    return PlainTextResponse(request.state.greeting)


async def item(request):
    return JSONResponse({"id": request.path_params["item_id"]})


async def health(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", hello), Route("/items/{item_id:int}", item), Route("/health", health)],
                lifespan=lifespan)
