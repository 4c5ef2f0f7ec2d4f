from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index():
    return {"message": "Hello, World!", "ok": True, "items": [1, 2, 3]}
