"""fastapi_json's endpoint as a plain `def`: FastAPI runs it on one of anyio's worker threads, a hop
from the event loop and back on every request (run_in_threadpool), as every sync endpoint takes."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def index():
    return {"message": "Hello, World!", "ok": True, "items": [1, 2, 3]}
