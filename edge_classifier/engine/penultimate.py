"""A classifier's penultimate tensor as a second output, by rewriting the .tflite flatbuffer.

Learned classes need an embedding of each frame. A classifier computes one anyway: the
input of its last layer (MobileNet's global average pool, after a ReLU6). ``with_embedding``
returns the model's bytes with that tensor appended to the first subgraph's outputs, so one
invoke yields both the class scores (output 0, unchanged) and the embedding (output 1).

The file comes from the model store, which is hostile: the reader below follows only the
path it needs (Model -> subgraphs[0] -> outputs, operators, tensors; operator_codes), checks
every offset against the buffer before reading, bounds every loop, and refuses anything it
does not expect with a ModelError naming the file and the problem. The rewrite only appends
(a 4-byte aligned int vector at the end, after any appended metadata ZIP) and changes one
forward offset (SubGraph.outputs), so every other offset in the file stays valid; the
runtime's own flatbuffer verifier checks the result again when it loads it.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from edge_classifier.errors import ModelError

__all__ = ["MAX_MODEL_BYTES", "Penultimate", "find_penultimate", "with_embedding"]

MAX_MODEL_BYTES = 1 << 30  # offsets are 32-bit; far above model.max_size_mb's largest value
_MAX_WALK = 8  # layers walked back from the output (softmax, reshape, ...) to the last conv/FC

# BuiltinOperator codes (tensorflow/lite/schema/schema.fbs)
_PASS_THROUGH = {6: "DEQUANTIZE", 14: "LOGISTIC", 22: "RESHAPE", 25: "SOFTMAX", 43: "SQUEEZE", 114: "QUANTIZE"}
_LAST_LAYER = {3: "CONV_2D", 9: "FULLY_CONNECTED"}
# Field numbers
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS = 1, 2
_SUBGRAPH_TENSORS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 2, 3
_OPERATOR_OPCODE, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 0, 1, 2
_OPCODE_DEPRECATED, _OPCODE_CUSTOM, _OPCODE_BUILTIN = 0, 1, 3
_TENSOR_SHAPE = 0


class _Malformed(Exception):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Penultimate:
    """Where the embedding is: tensor ``tensor`` (``size`` values), the input of ``layer``."""

    tensor: int
    size: int
    layer: str
    outputs_field: int  # absolute position of SubGraph.outputs' offset (what the rewrite changes)
    outputs: tuple[int, ...]


class _Buffer:
    """Bounds-checked little-endian reads of flatbuffer tables and vectors."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, at: int) -> int:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.data):
            raise _Malformed(f"an offset points outside the file ({at} of {len(self.data)} bytes)")
        value: int = struct.unpack_from(fmt, self.data, at)[0]
        return value

    def u32(self, at: int) -> int:
        return self._unpack("<I", at)

    def field(self, table: int, number: int) -> int | None:
        """The absolute position of field ``number`` of the table at ``table``, None if absent."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise _Malformed(f"a table's vtable has an impossible size {vtable_size}")
        slot = 4 + 2 * number
        if slot + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + slot)
        return table + offset if offset else None

    def target(self, at: int) -> int:
        """Follow the uoffset stored at ``at``."""
        return at + self.u32(at)

    def vector(self, at: int, element: int) -> tuple[int, int]:
        """(position of the first element, length) of the vector referenced at ``at``."""
        start = self.target(at)
        length = self.u32(start)
        if start + 4 + length * element > len(self.data):
            raise _Malformed(f"a vector of {length} elements runs past the end of the file")
        return start + 4, length

    def ints(self, table: int, number: int) -> tuple[int, ...]:
        where = self.field(table, number)
        if where is None:
            return ()
        first, length = self.vector(where, 4)
        return struct.unpack_from(f"<{length}i", self.data, first)

    def tables(self, table: int, number: int) -> list[int]:
        where = self.field(table, number)
        if where is None:
            return []
        first, length = self.vector(where, 4)
        return [self.target(first + 4 * index) for index in range(length)]

    def scalar(self, table: int, number: int, fmt: str, default: int) -> int:
        where = self.field(table, number)
        return default if where is None else self._unpack(fmt, where)


def find_penultimate(data: bytes, what: str = "model") -> Penultimate:
    """The embedding tensor of a one-output classifier; ModelError naming ``what`` otherwise."""
    try:
        return _find(_Buffer(data))
    except (_Malformed, struct.error) as exc:
        raise ModelError(f"{what}: cannot expose its penultimate layer: {exc}") from None


def _find(buffer: _Buffer) -> Penultimate:
    if len(buffer.data) < 8 or buffer.data[4:8] != b"TFL3":
        raise _Malformed("not a TFLite flatbuffer (no TFL3 identifier)")
    if len(buffer.data) > MAX_MODEL_BYTES:
        raise _Malformed(f"larger than {MAX_MODEL_BYTES} bytes")
    model = buffer.target(0)
    subgraphs = buffer.tables(model, _MODEL_SUBGRAPHS)
    if not subgraphs:
        raise _Malformed("no subgraph")
    graph = subgraphs[0]
    outputs = buffer.ints(graph, _SUBGRAPH_OUTPUTS)
    outputs_field = buffer.field(graph, _SUBGRAPH_OUTPUTS)
    if len(outputs) != 1 or outputs_field is None:
        raise _Malformed(f"{len(outputs)} outputs, expected the one score vector of a classifier")
    codes = buffer.tables(model, _MODEL_OPERATOR_CODES)
    operators = buffer.tables(graph, _SUBGRAPH_OPERATORS)
    producers: dict[int, int] = {}
    for operator in operators:
        for tensor in buffer.ints(operator, _OPERATOR_OUTPUTS):
            producers[tensor] = operator
    tensor = outputs[0]
    for _ in range(_MAX_WALK):
        producer = producers.get(tensor)
        if producer is None:
            raise _Malformed(f"tensor {tensor} is made by no operator before the last layer")
        operator = producer
        code = _builtin_code(buffer, codes, buffer.scalar(operator, _OPERATOR_OPCODE, "<I", 0))
        inputs = buffer.ints(operator, _OPERATOR_INPUTS)
        if not inputs or inputs[0] < 0:
            raise _Malformed("an operator without an input")
        if code in _LAST_LAYER:
            return _checked(buffer, graph, inputs[0], _LAST_LAYER[code], outputs_field, outputs)
        if code not in _PASS_THROUGH:
            raise _Malformed(f"the layers before the output are not softmax/reshape over a conv or "
                             f"fully-connected layer (builtin operator {code})")
        tensor = inputs[0]
    raise _Malformed(f"no conv or fully-connected layer within {_MAX_WALK} layers of the output")


def _builtin_code(buffer: _Buffer, codes: list[int], index: int) -> int:
    if index >= len(codes):
        raise _Malformed(f"an operator names operator code {index} of {len(codes)}")
    code = codes[index]
    if buffer.field(code, _OPCODE_CUSTOM) is not None:
        raise _Malformed("a custom operator before the output (a model compiled for the Edge TPU?)")
    # The schema's rule: the larger of the deprecated int8 code and the int32 one.
    return max(buffer.scalar(code, _OPCODE_DEPRECATED, "<b", 0), buffer.scalar(code, _OPCODE_BUILTIN, "<i", 0))


def _checked(buffer: _Buffer, graph: int, tensor: int, layer: str, outputs_field: int,
             outputs: tuple[int, ...]) -> Penultimate:
    tensors = buffer.tables(graph, _SUBGRAPH_TENSORS)
    if tensor >= len(tensors):
        raise _Malformed(f"the last layer's input is tensor {tensor} of {len(tensors)}")
    shape = buffer.ints(tensors[tensor], _TENSOR_SHAPE)
    size = 1
    for side in shape:
        size *= side
    if not shape or shape[0] != 1 or size < 2 or any(side < 1 for side in shape):
        raise _Malformed(f"the last layer's input has the shape {list(shape)}, not one embedding")
    return Penultimate(tensor, size, layer, outputs_field, outputs)


def with_embedding(data: bytes, what: str = "model") -> tuple[bytes, Penultimate]:
    """The model with its penultimate tensor as output 1 (scores stay output 0)."""
    found = find_penultimate(data, what)
    padding = -len(data) % 4
    vector_at = len(data) + padding
    outputs = (*found.outputs, found.tensor)
    tail = b"\0" * padding + struct.pack(f"<I{len(outputs)}i", len(outputs), *outputs)
    rewritten = bytearray(data + tail)
    struct.pack_into("<I", rewritten, found.outputs_field, vector_at - found.outputs_field)
    return bytes(rewritten), found


def read_model(path: Path) -> bytes:
    """A model file's bytes, refused above MAX_MODEL_BYTES before they are read whole."""
    with path.open("rb") as handle:
        data = handle.read(MAX_MODEL_BYTES + 1)
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: larger than {MAX_MODEL_BYTES} bytes")
    return data
