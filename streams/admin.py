from django.contrib import admin

from streams.models import Destination, Relay, Session, Stream


class DestinationInline(admin.TabularInline):
    model = Destination
    extra = 0
    exclude = ["stream_key"]  # platform keys are secrets: not shown in list screens


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "is_active", "is_streaming", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["id", "owner__username"]
    exclude = ["stream_key"]
    inlines = [DestinationInline]


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["id", "stream", "node_name", "started_at", "ended_at", "end_reason"]
    list_filter = ["end_reason", "node_name"]


@admin.register(Relay)
class RelayAdmin(admin.ModelAdmin):
    list_display = ["session", "destination", "state", "bitrate_kbps", "restarts", "updated_at"]
    list_filter = ["state"]


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    list_display = ["id", "stream", "service", "is_active", "is_muted", "created_at"]
    list_filter = ["service", "is_active"]
    exclude = ["stream_key"]  # a platform key is a secret: not shown on admin screens
