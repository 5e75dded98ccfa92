from agents import apis
from rig.api import route

urlpatterns = [
    route(r"agents/config/(?P<stream_key>[^/]+)", apis.AgentConfigApi.as_view(), "agent-config"),
    route(r"agents/streams", apis.AgentStreamsApi.as_view(), "agent-streams"),
    route(r"agents/pulls", apis.AgentPullsApi.as_view(), "agent-pulls"),
    route(r"agents/status", apis.AgentStatusApi.as_view(), "agent-status"),
    route(r"ingests", apis.IngestListApi.as_view(), "ingest-list"),
    route(r"agents/nodes", apis.NodeListApi.as_view(), "node-list"),
    route(r"agents/nodes/(?P<node_id>[^/]+)", apis.NodeDetailApi.as_view(), "node-detail"),
    route(
        r"agents/hooks/(?P<token>[^/]+)/(?P<event>[a-z_]+)",
        apis.PublishHookApi.as_view(),
        "agent-hook",
    ),
]
