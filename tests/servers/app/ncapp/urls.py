"""URLs of ncapp: each view in a sync form and an async one (under /async/)."""
from django.urls import path

from ncapp import views

urlpatterns = [
    path("get/<str:key>", views.get),
    path("set/<str:key>/<str:value>", views.set_),
    path("fragments", views.fragments),
    path("throttle", views.throttle),
    path("status", views.status),
    path("async/get/<str:key>", views.aget),
    path("async/set/<str:key>/<str:value>", views.aset),
    path("async/fragments", views.afragments),
    path("async/throttle", views.athrottle),
]
