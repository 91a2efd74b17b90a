"""Transport: how work units and result events move between processes (ZeroMQ, no pickle).

- :mod:`.protocol`: the wire format (versioned JSON header + raw array frames) and its checks;
- :mod:`.spool`: the durable disk store of the producer's outbox and the broker;
- :mod:`.wakeup`: a socket-pollable wake-up for threads that hand messages to a ZeroMQ loop;
- :mod:`.broker`: the broker (producers' ROUTER, workers' ROUTER with credits, result events PUB);
- :mod:`.publisher`: :class:`~.publisher.UnitPublisher`, the producer side with its disk outbox;
- :mod:`.events`: :class:`~.events.ResultEvents`, a subscriber to the broker's result events.
"""
