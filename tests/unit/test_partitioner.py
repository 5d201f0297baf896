"""Our murmur2 partitioner against aiokafka's reference (Kafka's ``Utils.murmur2``)."""

import random

import pytest
from aiokafka.partitioner import murmur2 as reference

from scoring.partitioner import key_partition, murmur2

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
