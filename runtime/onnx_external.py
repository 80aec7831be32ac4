"""The external data files an ONNX graph names, read without the onnx package (the runtime has none).

onnxruntime opens the file a tensor's `external_data` "location" names, relative to the graph, so a
crafted graph could make it read anywhere. The bundle checks every location lies inside its folder
and is listed in its manifest (hence hash-checked) before the graph is loaded.

A minimal protobuf walk of onnx.proto3 (field numbers from the ONNX IR spec):
    ModelProto      7 graph, 25 functions (FunctionProto: 7 node)
    GraphProto      1 node, 5 initializer, 15 sparse_initializer
    NodeProto       5 attribute
    AttributeProto  5 t, 6 g, 10 tensors, 11 graphs, 22 sparse_tensor, 23 sparse_tensors
    SparseTensorProto  1 values, 2 indices
    TensorProto     13 external_data (StringStringEntryProto: 1 key, 2 value)
Everything else (raw_data included) is skipped by its length, never decoded.
"""

from __future__ import annotations

from pathlib import Path

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise OnnxFormatError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of one message; LEN values as bytes (memoryview slices)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(data, i)
        elif wire == _I64:
            value, i = data[i : i + 8], i + 8
        elif wire == _I32:
            value, i = data[i : i + 4], i + 4
        elif wire == _LEN:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise OnnxFormatError("a field runs past the end of its message")
            value, i = data[i : i + size], i + size
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
        yield number, wire, value


def _tensor(data, out: list[str]) -> None:
    for number, wire, value in _fields(data):
        if number == 13 and wire == _LEN:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == _LEN}
            if entry.get(1) == "location" and 2 in entry:
                out.append(entry[2])


def _sparse(data, out: list[str]) -> None:
    for number, wire, value in _fields(data):
        if number in (1, 2) and wire == _LEN:
            _tensor(value, out)


def _node(data, out: list[str]) -> None:
    for number, wire, value in _fields(data):
        if number == 5 and wire == _LEN:  # an attribute
            for a_number, a_wire, a_value in _fields(value):
                if a_wire != _LEN:
                    continue
                if a_number in (5, 10):
                    _tensor(a_value, out)
                elif a_number in (6, 11):
                    _graph(a_value, out)
                elif a_number in (22, 23):
                    _sparse(a_value, out)


def _graph(data, out: list[str]) -> None:
    for number, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if number == 1:
            _node(value, out)
        elif number == 5:
            _tensor(value, out)
        elif number == 15:
            _sparse(value, out)


def external_data_locations(path: Path) -> list[str]:
    """Every external data location the ONNX file at `path` names (duplicates removed, in order)."""
    data = memoryview(Path(path).read_bytes())
    out: list[str] = []
    for number, wire, value in _fields(data):
        if wire != _LEN:
            continue
        if number == 7:
            _graph(value, out)
        elif number == 25:  # a function: its nodes
            for f_number, f_wire, f_value in _fields(value):
                if f_number == 7 and f_wire == _LEN:
                    _node(f_value, out)
    return list(dict.fromkeys(out))
