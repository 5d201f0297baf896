"""A minimal Faust worker for the plumbing smoke test: upper-cases one topic into another."""

import os
from typing import Any

import faust

app = faust.App(
    os.environ["SMOKE_APP_ID"],
    broker="kafka://" + os.environ["SMOKE_BOOTSTRAP"],
    store="memory://",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["SMOKE_IN"], value_type=bytes, value_serializer="raw")
sink = app.topic(os.environ["SMOKE_OUT"], value_type=bytes, value_serializer="raw")


@app.agent(source)
async def relay(stream: Any) -> None:
    async for value in stream:
        await sink.send(value=value.upper())


if __name__ == "__main__":
    app.main()
