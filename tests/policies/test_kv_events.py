import msgspec

from triage_router.policies.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    END_OF_REPLAY,
    sequence_bytes,
)

# Encoded by vLLM 0.32's own classes (vllm.distributed.kv_events.KVEventBatch): two stores (one
# with int hashes, one with a sha256 digest, extra_keys and group_idx), a removal and a reset.
VLLM_BATCH = bytes.fromhex(
    "93cb41da4cf0d02000009488a474797065ab426c6f636b53746f726564ac626c6f636b5f686173686573920b0c"
    "b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f696473980102030405060708aa626c6f636b5f"
    "73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c08aa474797065ab426c"
    "6f636b53746f726564ac626c6f636b5f68617368657391c42001010101010101010101010101010101010101010101"
    "01010101010101010101b1706172656e745f626c6f636b5f686173680ca9746f6b656e5f69647394090a0b0caa62"
    "6c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0aa657874"
    "72615f6b6579739191a473616c74a967726f75705f6964780083a474797065ac426c6f636b52656d6f766564ac62"
    "6c6f636b5f686173686573910ba66d656469756da347505581a474797065b0416c6c426c6f636b73436c656172"
    "656400"
)


def test_decodes_what_vllm_encodes():
    batch = msgspec.msgpack.decode(VLLM_BATCH, type=EventBatch)
    assert batch.ts == 1765000000.5 and batch.data_parallel_rank == 0
    first, second, removed, cleared = batch.events
    assert first == BlockStored([11, 12], None, [1, 2, 3, 4, 5, 6, 7, 8], 4, None, "GPU", None)
    assert second.block_hashes == [b"\x01" * 32] and second.parent_block_hash == 12
    assert second.extra_keys == [("salt",)] and second.group_idx == 0
    assert removed == BlockRemoved([11], "GPU")
    assert isinstance(cleared, AllBlocksCleared)


def test_encodes_as_vllm_does():
    """What our engine publishes is byte for byte what vLLM would send for the same events."""
    batch = msgspec.msgpack.decode(VLLM_BATCH, type=EventBatch)
    assert msgspec.msgpack.encode(batch) == VLLM_BATCH


def test_sequence_numbers_are_eight_bytes_big_endian():
    assert sequence_bytes(258) == b"\x00" * 6 + b"\x01\x02"
    assert int.from_bytes(END_OF_REPLAY, "big", signed=True) == -1
