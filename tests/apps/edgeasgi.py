"""A FastAPI app as deployed behind nginx: what it believes about the request's origin, uploads,
a streamed response, a slash redirect (absolute, so its scheme shows) and a websocket echo."""
import hashlib

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/whoami")
async def whoami(request: Request):
    return {
        "scheme": request.url.scheme,
        "client": request.client.host if request.client else None,
        "server": list(request.scope["server"]) if request.scope.get("server") else None,
        "forwarded_for": request.headers.get("x-forwarded-for"),
        "underscore_header": request.headers.get("x_user_role"),
        "absolute": str(request.url_for("whoami")),
    }


@app.post("/json")
async def echo_json(request: Request):
    return {"got": await request.json(), "method": request.method}


@app.post("/upload")
async def upload(request: Request):
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.stream():
        digest.update(chunk)
        length += len(chunk)
    return {"length": length, "sha256": digest.hexdigest()}


@app.get("/stream")
async def stream():
    async def chunks():
        for _ in range(16):
            yield b"x" * 65536
    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.get("/items/")
async def items():
    return {"items": []}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text("echo: " + message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return
