from django.urls import path, re_path

from dashboard import views

app_name = "dashboard"

_STREAM = "app/streams/<str:stream_id>"
_DEST = f"{_STREAM}/destinations/<str:destination_id>"
_WEBHOOK = "app/webhooks/<str:webhook_id>"

urlpatterns = [
    path("", views.home, name="home"),
    path("app", views.home, name="app"),
    path("app/", views.streams, name="streams"),
    path("app/signup", views.signup, name="signup"),
    path("app/login", views.login_page, name="login"),
    path("app/logout", views.logout_page, name="logout"),
    path("app/password", views.password, name="password"),
    path(_STREAM, views.stream, name="stream"),
    path(f"{_STREAM}/live", views.stream_live, name="stream-live"),
    path(f"{_STREAM}/rotateKey", views.stream_rotate_key, name="stream-rotate-key"),
    path(f"{_STREAM}/active", views.stream_active, name="stream-active"),
    path(f"{_STREAM}/delete", views.stream_delete, name="stream-delete"),
    path(f"{_STREAM}/destinations", views.destination_add, name="destination-add"),
    path(f"{_DEST}/active", views.destination_active, name="destination-active"),
    path(f"{_DEST}/mute", views.destination_mute, name="destination-mute"),
    path(f"{_DEST}/restart", views.destination_restart, name="destination-restart"),
    path(f"{_DEST}/delete", views.destination_delete, name="destination-delete"),
    path(f"{_DEST}/log", views.relay_log, name="relay-log"),
    path("app/webhooks", views.webhooks, name="webhooks"),
    path(f"{_WEBHOOK}/rotateSecret", views.webhook_rotate, name="webhook-rotate"),
    path(f"{_WEBHOOK}/test", views.webhook_test, name="webhook-test"),
    path(f"{_WEBHOOK}/active", views.webhook_active, name="webhook-active"),
    path(f"{_WEBHOOK}/delete", views.webhook_delete, name="webhook-delete"),
    path("app/nodes", views.node_list, name="nodes"),
    path("app/nodes/<str:node_id>", views.node_update, name="node-update"),
    re_path(r"^app/(?P<path>.*)$", views.not_found_page, name="not-found"),
]
