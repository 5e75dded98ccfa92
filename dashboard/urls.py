from django.urls import path, re_path

from dashboard.views import accounts, base, nodes, streams, webhooks

app_name = "dashboard"

_STREAM = "app/streams/<str:stream_id>"
_DEST = f"{_STREAM}/destinations/<str:destination_id>"
_WEBHOOK = "app/webhooks/<str:webhook_id>"

urlpatterns = [
    path("", streams.home, name="home"),
    path("app", streams.home, name="app"),
    path("app/", streams.streams, name="streams"),
    path("app/signup", accounts.signup, name="signup"),
    path("app/login", accounts.login_page, name="login"),
    path("app/logout", accounts.logout_page, name="logout"),
    path("app/password", accounts.password, name="password"),
    path(_STREAM, streams.stream, name="stream"),
    path(f"{_STREAM}/live", streams.stream_live, name="stream-live"),
    path(f"{_STREAM}/picture", streams.stream_picture, name="stream-picture"),
    path(f"{_STREAM}/rotateKey", streams.stream_rotate_key, name="stream-rotate-key"),
    path(f"{_STREAM}/active", streams.stream_active, name="stream-active"),
    path(f"{_STREAM}/delete", streams.stream_delete, name="stream-delete"),
    path(f"{_STREAM}/source", streams.stream_source, name="stream-source"),
    path(f"{_STREAM}/push", streams.stream_push, name="stream-push"),
    path(f"{_STREAM}/record", streams.stream_record, name="stream-record"),
    path(
        "app/recordings/<str:recording_id>/download",
        streams.recording_download,
        name="recording-download",
    ),
    path(
        "app/recordings/<str:recording_id>/delete",
        streams.recording_delete,
        name="recording-delete",
    ),
    path(f"{_STREAM}/source/restart", streams.source_restart, name="source-restart"),
    path(f"{_STREAM}/destinations", streams.destination_add, name="destination-add"),
    path(f"{_DEST}/active", streams.destination_active, name="destination-active"),
    path(f"{_DEST}/mute", streams.destination_mute, name="destination-mute"),
    path(f"{_DEST}/restart", streams.destination_restart, name="destination-restart"),
    path(f"{_DEST}/delete", streams.destination_delete, name="destination-delete"),
    path(f"{_DEST}/log", streams.relay_log, name="relay-log"),
    path("app/webhooks", webhooks.webhooks, name="webhooks"),
    path(f"{_WEBHOOK}/rotateSecret", webhooks.webhook_rotate, name="webhook-rotate"),
    path(f"{_WEBHOOK}/test", webhooks.webhook_test, name="webhook-test"),
    path(f"{_WEBHOOK}/active", webhooks.webhook_active, name="webhook-active"),
    path(f"{_WEBHOOK}/delete", webhooks.webhook_delete, name="webhook-delete"),
    path("app/nodes", nodes.node_list, name="nodes"),
    path("app/nodes/<str:node_id>", nodes.node_update, name="node-update"),
    re_path(r"^app/(?P<path>.*)$", base.not_found_page, name="not-found"),
]
