"""How appserver runs a request's coroutine: it steps the coroutine itself (no asyncio.Task; the first
step runs as the request arrives), so these check what libraries expect of the current task."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import wait_until

LOOPS = ["uvloop", "asyncio"]


@pytest.fixture(params=LOOPS)
def server(request, serve):
    return serve("tasksapp:app", "--loop", request.param)


def get(server, path):
    r = requests.get(server.url + path, timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def test_current_task_is_one_identity_across_awaits(server):
    body = get(server, "/current-task")
    assert body["has_task"] and body["same"] == [True, True, True]
    assert body["name"].startswith("appserver-request-") and body["done"] is False
    assert body["coro"] == "coroutine" and body["stack"] and body["repr"].startswith("<RequestTask appserver-request-")
    assert body["between_steps"] == "None"


def test_sync_endpoints_in_anyio_threads_run_concurrently(server):
    # anyio keys its cancel scopes by the current task: 200 requests, 32 at a time, each its own task.
    with ThreadPoolExecutor(32) as pool:
        bodies = list(pool.map(lambda n: get(server, f"/sync?n={n}"), range(200)))
    assert [b["n"] for b in bodies] == list(range(200)) and all(b["thread"] for b in bodies)
    assert "Traceback" not in server.log()


def test_asyncio_timeout_and_anyio_cancel_scopes_cancel_the_request_task(server):
    assert get(server, "/timeout") == {"timed_out": True, "cancelling": 0}
    assert get(server, "/move-on") == {"cancelled_caught": True}


def test_asyncio_and_anyio_task_groups(server):
    assert get(server, "/task-groups") == {"asyncio": ["child failed"], "anyio": [0, 1, 2]}


def test_a_task_can_cancel_itself(server):
    assert get(server, "/cancel-self") == {"cancelled": True, "message": "cancelled by the test"}


def test_context_variables_stay_with_their_request(server):
    values = [f"v{n}" for n in range(40)]
    with ThreadPoolExecutor(40) as pool:
        bodies = list(pool.map(lambda v: get(server, f"/context/{v}"), values))
    assert [b["value"] for b in bodies] == values


def test_an_app_whose_call_returns_a_future(serve):
    server = serve("tasksapp:awaitable_app", "--interface", "asgi")
    r = requests.get(server.url + "/", timeout=10)
    assert r.status_code == 200 and r.text == "from a future"
    # The call itself raising (before any coroutine exists) is a 500 with the traceback in the log.
    r = requests.get(server.url + "/raise", timeout=10)
    assert r.status_code == 500
    wait_until(lambda: "raised before any coroutine" in server.log(), message="the traceback in the log")
    assert requests.get(server.url + "/", timeout=10).text == "from a future"
