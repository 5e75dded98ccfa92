"""Test data factories."""

import factory

from accounts.models import User
from agents.models import IngestNode, new_node_token, token_hash
from streams.models import Destination, Service, Stream
from streams.services import new_stream_key

PASSWORD = "Hop0nTh4tM4ng0Tree"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password(PASSWORD)


class StreamFactory(factory.django.DjangoModelFactory[Stream]):
    class Meta:
        model = Stream

    owner = factory.SubFactory(UserFactory)
    stream_key = factory.LazyFunction(new_stream_key)


class DestinationFactory(factory.django.DjangoModelFactory[Destination]):
    class Meta:
        model = Destination

    stream = factory.SubFactory(StreamFactory)
    service = Service.YOUTUBE
    stream_key = factory.Sequence(lambda n: f"yt-key-{n}")


def node_create(name: str = "node1", **fields: object) -> tuple[IngestNode, str]:
    token = new_node_token()
    defaults = {"rtmp_url": f"rtmp://127.0.0.1:1935/{name}", "agent_url": ""}
    node = IngestNode.objects.create(
        name=name, token_hash=token_hash(token), **{**defaults, **fields}
    )
    return node, token
