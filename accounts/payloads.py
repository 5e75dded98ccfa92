"""Shapes of the accounts endpoints' payloads: the OpenAPI schema documents them and `@payload`
renders every answer through them (rig.schema.payload)."""

from rest_framework import serializers


class UserPayload(serializers.Serializer):
    userID = serializers.UUIDField()
    username = serializers.CharField()
    email = serializers.EmailField()


class TokenPairPayload(serializers.Serializer):
    username = serializers.CharField()
    token = serializers.CharField(help_text="Access token (JWT): `Authorization: Bearer <token>`.")
    refreshToken = serializers.CharField(
        help_text="Single-use refresh token for /accounts/auth/refresh."
    )
