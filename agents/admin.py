from django.contrib import admin
from django.http import HttpRequest

from agents.models import IngestNode


@admin.register(IngestNode)
class IngestNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "rtmp_url", "capacity", "is_draining", "last_seen_at"]
    exclude = ["token_hash"]
    readonly_fields = ["last_seen_at", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes are created with `manage.py node_create`, which shows the token once
