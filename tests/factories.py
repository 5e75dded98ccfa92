"""Test data factories."""

from typing import Any

import factory

from accounts.models import User
from agents.models import IngestNode, new_node_token
from streams import selectors
from streams.models import Destination, Relay, Service, Session, Stream
from streams.services import new_stream_key
from streams.sessions import session_open

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
    node = IngestNode(name=name, **{**defaults, **fields})
    node.set_token(token)
    node.save()
    return node, token


def session_start(stream: Stream, node: IngestNode, client_id: str = "1") -> Session:
    """A live session on ``node``, as a publish would start it (without the hook's checks)."""
    return session_open(stream=stream, node=node, client_id=client_id)


def relay_row(destination: Destination, **fields: Any) -> Relay:
    """A node's report on the relay to ``destination`` in its stream's latest session."""
    stream = Stream.objects.get(pk=destination.stream_id)
    assert stream.session is not None
    return Relay.objects.create(
        session=stream.session, destination=destination, service=destination.service, **fields
    )


def relay_of(destination: Destination) -> Relay:
    """The relay to ``destination`` in its stream's latest session."""
    return Relay.objects.get(session__stream__pk=destination.stream_id, destination=destination)


def session_of(stream: Stream) -> Session:
    """The stream's latest session, fresh from the database."""
    session = Stream.objects.get(pk=stream.pk).session
    assert session is not None
    return session


def provision(stream: Stream) -> Any:
    """The stream's provisionStatus as the API renders it."""
    stream = Stream.objects.get(pk=stream.pk)
    return selectors.provision_status(stream, list(stream.destinations.order_by("id")))
