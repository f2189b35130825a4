"""External-data references of an ONNX file, read from the protobuf wire format (no onnx package needed).

    refs = external_data_locations(Path("bundle/encoder.onnx"))   # e.g. ["encoder.weights"]; [] for most models

An ONNX tensor may keep its bytes in another file (`data_location: EXTERNAL`, `external_data {key: "location"}`);
ONNX Runtime opens that path relative to the model. The bundle loader checks each location stays inside the
bundle and is a listed (sha256-checked) file. The walk covers every place a TensorProto can sit: graph
initializers, sparse initializers, node attributes (t, tensors, sparse tensors) and subgraphs (g, graphs), in the
main graph and in model-local functions; it reads lengths only and never copies tensor payloads.
"""

from __future__ import annotations

from pathlib import Path

# field numbers (onnx.proto3)
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTR = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 9, 10, 22, 23
_FUNC_NODE = 7
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL, _TENSOR_LOCATION_KIND = 13, 14
_MAX_DEPTH = 64


class OnnxParseError(ValueError):
    """The file is not a well-formed ONNX protobuf."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise OnnxParseError("truncated or oversized varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) over one message; length-delimited values as memoryviews."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = None, pos + 8
        elif wt == 5:
            val, pos = None, pos + 4
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise OnnxParseError(f"field {num} runs past the end of its message")
            val, pos = buf[pos : pos + n], pos + n
        else:
            raise OnnxParseError(f"unsupported wire type {wt}")
        if pos > len(buf):
            raise OnnxParseError("truncated message")
        yield num, wt, val


def _tensor(buf: memoryview, out: list[str]) -> None:
    external, location = False, None
    for num, wt, val in _fields(buf):
        if num == _TENSOR_LOCATION_KIND and wt == 0:
            external = val == 1
        elif num == _TENSOR_EXTERNAL and wt == 2:
            key = value = None
            for k, kwt, v in _fields(val):
                if kwt == 2 and k == 1:
                    key = bytes(v).decode("utf-8", "replace")
                elif kwt == 2 and k == 2:
                    value = bytes(v).decode("utf-8", "replace")
            if key == "location":
                location = value
    if external or location is not None:
        out.append(location if location is not None else "")


def _sparse(buf: memoryview, out: list[str]) -> None:
    for num, wt, val in _fields(buf):
        if wt == 2 and num in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(val, out)


def _nodes_attr(buf: memoryview, out: list[str], depth: int) -> None:
    for num, wt, val in _fields(buf):
        if wt != 2:
            continue
        if num in (_ATTR_T, _ATTR_TENSORS):
            _tensor(val, out)
        elif num in (_ATTR_G, _ATTR_GRAPHS):
            _graph(val, out, depth + 1)
        elif num in (_ATTR_SPARSE, _ATTR_SPARSES):
            _sparse(val, out)


def _node(buf: memoryview, out: list[str], depth: int) -> None:
    for num, wt, val in _fields(buf):
        if num == _NODE_ATTR and wt == 2:
            _nodes_attr(val, out, depth)


def _graph(buf: memoryview, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxParseError("subgraphs nested too deeply")
    for num, wt, val in _fields(buf):
        if wt != 2:
            continue
        if num == _GRAPH_INIT:
            _tensor(val, out)
        elif num == _GRAPH_SPARSE_INIT:
            _sparse(val, out)
        elif num == _GRAPH_NODE:
            _node(val, out, depth)


def external_data_locations(path: str | Path) -> list[str]:
    """Every external-data `location` in the ONNX file at `path` ("" for an external tensor without one).

    Raises:
        OnnxParseError: the file is not a well-formed ONNX protobuf.
    """
    buf = memoryview(Path(path).read_bytes())
    out: list[str] = []
    for num, wt, val in _fields(buf):
        if wt != 2:
            continue
        if num == _MODEL_GRAPH:
            _graph(val, out, 0)
        elif num == _MODEL_FUNCTIONS:
            for fnum, fwt, fval in _fields(val):
                if fnum == _FUNC_NODE and fwt == 2:
                    _node(fval, out, 1)
    return out
