from rig.api import route
from streams import apis, media_apis

_ID = r"(?P<stream_id>[^/]+)"
_DEST = r"(?P<destination_id>[^/]+)"

urlpatterns = [
    route(r"services", apis.ServiceListApi.as_view(), "service-list"),
    route(r"streams", apis.StreamListCreateApi.as_view(), "stream-list"),
    route(rf"streams/{_ID}", apis.StreamDetailApi.as_view(), "stream-detail"),
    route(rf"streams/{_ID}/changeKey", apis.StreamChangeKeyApi.as_view(), "stream-change-key"),
    route(rf"streams/{_ID}/destination", apis.DestinationAddApi.as_view(), "destination-add"),
    route(rf"streams/{_ID}/destinations", apis.DestinationListApi.as_view(), "destination-list"),
    route(
        rf"streams/{_ID}/destinations/{_DEST}",
        apis.DestinationDetailApi.as_view(),
        "destination-detail",
    ),
    route(rf"streams/{_ID}/sessions", apis.SessionListApi.as_view(), "session-list"),
    route(rf"streams/{_ID}/source", media_apis.StreamSourceApi.as_view(), "stream-source"),
    route(
        rf"streams/{_ID}/source/restart",
        media_apis.StreamSourceRestartApi.as_view(),
        "stream-source-restart",
    ),
    route(
        rf"streams/{_ID}/recordings", media_apis.StreamRecordingListApi.as_view(), "recording-list"
    ),
    route(
        r"recordings/(?P<recording_id>[^/]+)", media_apis.RecordingDetailApi.as_view(), "recording"
    ),
    route(
        r"recordings/(?P<recording_id>[^/]+)/download",
        media_apis.RecordingDownloadApi.as_view(),
        "recording-download",
    ),
    route(rf"streams/{_ID}/snapshot", media_apis.StreamSnapshotApi.as_view(), "stream-snapshot"),
    route(rf"streams/{_ID}/relays", apis.RelayListApi.as_view(), "relay-list"),
    route(rf"streams/{_ID}/relays/{_DEST}", apis.RelayDetailApi.as_view(), "relay-detail"),
    route(
        rf"streams/{_ID}/relays/{_DEST}/restart", apis.RelayRestartApi.as_view(), "relay-restart"
    ),
    route(rf"streams/{_ID}/relays/{_DEST}/mute", apis.RelayMuteApi.as_view(), "relay-mute"),
    route(rf"streams/{_ID}/relays/{_DEST}/unmute", apis.RelayUnmuteApi.as_view(), "relay-unmute"),
]
