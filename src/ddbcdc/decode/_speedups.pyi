from typing import Any

def unmarshal(attribute_map: dict[str, Any], /) -> dict[str, Any] | None: ...
def build(
    raw: dict[str, Any], factor: int, shard_id: str | None, sequence_number: str | None, /
) -> dict[str, Any] | None: ...
def decode(
    payload: bytes | str, factor: int, shard_id: str | None, sequence_number: str | None, /
) -> Any: ...
def configure(
    record_class: type[Any],
    fields_set: set[str],
    dict_slot: Any,
    fields_set_slot: Any,
    extra_slot: Any,
    private_slot: Any,
    /,
) -> None: ...
