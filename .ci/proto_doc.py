#!/usr/bin/env python3
"""The API reference of docs/api.md, generated from the proto's own comments.

    .ci/proto_doc.py IMAGE.json check docs/api.md   fails when the reference is stale
    .ci/proto_doc.py IMAGE.json write docs/api.md   rewrites it in place

IMAGE.json is `buf build -o IMAGE.json` (a FileDescriptorSet with source info). The
reference sits between `<!-- proto-reference:begin -->` and `<!-- proto-reference:end -->`.
Both modes first fail when a service, method, message, field, enum or enum value of
the package has no comment: the comments are the reference.
"""
import json
import sys
from pathlib import Path

PACKAGE = "calloutcome.v1"
BEGIN = "<!-- proto-reference:begin -->"
END = "<!-- proto-reference:end -->"

# FieldDescriptorProto.Type names, as written in a .proto file.
SCALARS = {
    "TYPE_DOUBLE": "double", "TYPE_FLOAT": "float", "TYPE_INT64": "int64",
    "TYPE_UINT64": "uint64", "TYPE_INT32": "int32", "TYPE_FIXED64": "fixed64",
    "TYPE_FIXED32": "fixed32", "TYPE_BOOL": "bool", "TYPE_STRING": "string",
    "TYPE_BYTES": "bytes", "TYPE_UINT32": "uint32", "TYPE_SFIXED32": "sfixed32",
    "TYPE_SFIXED64": "sfixed64", "TYPE_SINT32": "sint32", "TYPE_SINT64": "sint64",
}


def fail(message):
    print(f"proto_doc: {message}", file=sys.stderr)
    sys.exit(1)


def comments(file):
    """path tuple -> leading comment (stripped, paragraphs joined)."""
    out = {}
    for loc in file.get("sourceCodeInfo", {}).get("location", []):
        text = loc.get("leadingComments") or loc.get("trailingComments")
        if text:
            lines = [line.strip() for line in text.strip("\n").split("\n")]
            out[tuple(loc.get("path", []))] = " ".join(l for l in lines if l)
    return out


def short(type_name):
    name = type_name.lstrip(".")
    return name[len(PACKAGE) + 1:] if name.startswith(PACKAGE + ".") else name


def cell(text):
    return text.replace("|", "\\|")


def render(image):
    files = [f for f in image["file"] if f.get("package") == PACKAGE]
    if not files:
        fail(f"no file of package {PACKAGE} in the image")
    missing, out = [], []
    for f in files:
        docs = comments(f)
        messages = {m["name"]: m for m in f.get("messageType", [])}

        def doc(path, what):
            text = docs.get(tuple(path))
            if not text:
                missing.append(what)
                return ""
            return text

        def map_entry(field):
            if field.get("type") != "TYPE_MESSAGE":
                return None
            parts = short(field["typeName"]).split(".")
            if len(parts) == 2 and parts[0] in messages:
                for nested in messages[parts[0]].get("nestedType", []):
                    if nested["name"] == parts[1] and nested.get("options", {}).get("mapEntry"):
                        return nested
            return None

        def type_of(field):
            entry = map_entry(field)
            if entry:
                k, v = entry["field"]
                return f"map<{type_of(k)}, {type_of(v)}>"
            base = SCALARS.get(field["type"]) or f"`{short(field['typeName'])}`"
            if field.get("label") == "LABEL_REPEATED":
                return f"repeated {base}"
            if field.get("proto3Optional"):
                return f"optional {base}"
            return base

        def oneof_of(message, field):
            if "oneofIndex" not in field or field.get("proto3Optional"):
                return ""
            return f"oneof `{message['oneofDecl'][field['oneofIndex']]['name']}`: "

        for si, service in enumerate(f.get("service", [])):
            out.append(f"### Service `{service['name']}`\n")
            out.append(doc([6, si], f"service {service['name']}") + "\n")
            out.append("| RPC | request | response | what it does |")
            out.append("|---|---|---|---|")
            for mi, method in enumerate(service.get("method", [])):
                text = doc([6, si, 2, mi], f"rpc {service['name']}.{method['name']}")
                response = f"`{short(method['outputType'])}`"
                if method.get("serverStreaming"):
                    response = f"stream {response}"
                out.append(f"| `{method['name']}` | `{short(method['inputType'])}` | {response} | {cell(text)} |")
            out.append("")

        out.append("### Messages\n")
        for mi, message in enumerate(f.get("messageType", [])):
            out.append(f"#### `{message['name']}`\n")
            out.append(doc([4, mi], f"message {message['name']}") + "\n")
            fields = message.get("field", [])
            if fields:
                out.append("| field | number | type | description |")
                out.append("|---|---:|---|---|")
                for fi, field in enumerate(fields):
                    text = doc([4, mi, 2, fi], f"field {message['name']}.{field['name']}")
                    out.append(f"| `{field['name']}` | {field['number']} | {oneof_of(message, field)}{type_of(field)} | {cell(text)} |")
                out.append("")

        out.append("### Enums\n")
        for ei, enum in enumerate(f.get("enumType", [])):
            out.append(f"#### `{enum['name']}`\n")
            out.append(doc([5, ei], f"enum {enum['name']}") + "\n")
            out.append("| value | number | meaning |")
            out.append("|---|---:|---|")
            for vi, value in enumerate(enum.get("value", [])):
                if value["name"].endswith("_UNSPECIFIED") and value["number"] == 0:
                    text = docs.get((5, ei, 2, vi), "Not set (the proto3 default); never sent by the service.")
                else:
                    text = doc([5, ei, 2, vi], f"enum value {enum['name']}.{value['name']}")
                deprecated = " (deprecated)" if value.get("options", {}).get("deprecated") else ""
                out.append(f"| `{value['name']}` | {value['number']} | {cell(text)}{deprecated} |")
            out.append("")
    if missing:
        fail("no comment on:\n  " + "\n  ".join(missing))
    return "\n".join(out).rstrip() + "\n"


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("check", "write"):
        fail(__doc__)
    image = json.loads(Path(sys.argv[1]).read_text())
    doc_path = Path(sys.argv[3])
    text = doc_path.read_text()
    if BEGIN not in text or END not in text:
        fail(f"{doc_path} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    generated = f"{head}{BEGIN}\n<!-- generated by .ci/proto_doc.py from the proto's comments: edit the proto, then run .ci/proto_doc.py IMAGE write {doc_path} -->\n\n{render(image)}\n{END}{tail}"
    if sys.argv[2] == "write":
        doc_path.write_text(generated)
    elif generated != text:
        fail(f"{doc_path}: the API reference is not the proto's (regenerate: buf build -o /tmp/image.json && .ci/proto_doc.py /tmp/image.json write {doc_path})")
    print(f"ok - {doc_path}: API reference matches the proto")


if __name__ == "__main__":
    main()
