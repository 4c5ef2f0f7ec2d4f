from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return JsonResponse({"message": "Hello from Django", "path": request.path, "q": request.GET.get("q")})


@csrf_exempt
def upload(request):
    return JsonResponse({"method": request.method, "length": len(request.body), "name": request.POST.get("name")})


def text(request):
    return HttpResponse("plain text from Django", content_type="text/plain")


urlpatterns = [
    path("", hello),
    path("upload", upload),
    path("text", text),
]
