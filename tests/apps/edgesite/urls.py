import hashlib
import json

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def whoami(request):
    """What the app believes about the request's origin."""
    return JsonResponse({
        "scheme": request.scheme,
        "secure": request.is_secure(),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "host": request.get_host(),
        "forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
        "underscore_header": request.META.get("HTTP_X_USER_ROLE"),
        "absolute": request.build_absolute_uri("/next"),
    })


def form(request):
    if request.method == "POST":
        return HttpResponse("accepted " + request.POST.get("name", ""), content_type="text/plain")
    return JsonResponse({"csrftoken": get_token(request)})


@csrf_exempt
def upload(request):
    digest = hashlib.sha256()
    length = 0
    while True:
        chunk = request.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    return JsonResponse({"length": length, "sha256": digest.hexdigest()})


@csrf_exempt
def echo_json(request):
    data = json.loads(request.body)
    return JsonResponse({"got": data, "method": request.method})


def stream(request):
    chunk = b"x" * 65536
    return StreamingHttpResponse((chunk for _ in range(16)), content_type="application/octet-stream")


urlpatterns = [
    path("whoami", whoami),
    path("form", form),
    path("upload", upload),
    path("json", echo_json),
    path("stream", stream),
]
