"""Our murmur2 partitioner against aiokafka's reference (Kafka's ``Utils.murmur2``)."""

import random

import pytest
from aiokafka.partitioner import murmur2 as reference

from scoring.partitioner import key_partition, murmur2, producer_partition

pytestmark = pytest.mark.unit


def test_murmur2_equals_the_reference_for_every_length() -> None:
    rng = random.Random(11)
    for length in range(0, 130):
        for _ in range(20):
            data = rng.randbytes(length)
            assert murmur2(data) == reference(data) & 0xFFFFFFFF, data


@pytest.mark.parametrize(
    ("key", "java"),
    # Kafka's own test vectors for Utils.murmur2 (UtilsTest.testMurmur2), signed as Java returns them.
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_gives_the_java_clients_hash(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF
    assert key_partition(key, 8) == (java & 0x7FFFFFFF) % 8


def test_the_producers_partitioner_places_records_as_aiokafkas_default() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    reference_partitioner = DefaultPartitioner()
    rng = random.Random(5)
    for count in (1, 3, 8, 12, 50):
        partitions = list(range(count))
        for _ in range(300):
            key = rng.randbytes(rng.randrange(0, 80))
            assert producer_partition(key, partitions, partitions) == reference_partitioner(key, partitions, partitions)
    # Without a key: a random available partition, any partition when none is available.
    assert {producer_partition(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)} == {1, 3}
    assert {producer_partition(None, [0, 1, 2], []) for _ in range(200)} == {0, 1, 2}


def test_the_workers_producer_uses_it() -> None:
    from streams.app import create_app
    from streams.settings import settings_from_env

    service = create_app(settings_from_env({}))
    assert service.app.conf.producer_partitioner is producer_partition
