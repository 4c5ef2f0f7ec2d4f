"""A Django site as deployed behind nginx with TLS: CSRF protection and SECURE_SSL_REDIRECT on, and no
SECURE_PROXY_SSL_HEADER: the https scheme must come from the server (wsgi.url_scheme)."""
SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "edgesite.urls"
INSTALLED_APPS = ["django.contrib.contenttypes"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
SECURE_SSL_REDIRECT = True
CSRF_COOKIE_SECURE = True
DATABASES = {}
USE_TZ = True
