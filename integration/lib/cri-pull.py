#!/usr/bin/python3
"""Pulls an image through containerd's CRI plugin (runtime.v1.ImageService/PullImage), as the
kubelet does, and prints the image reference CRI answers with. containerd 1.6's ctr passes no
layer labels to the snapshotter; CRI does (with disable_snapshot_annotations = false), so this is
how the integration tests pull lazily there.

The two messages are encoded by hand (PullImageRequest{image: ImageSpec{image: REF}} and
PullImageResponse{image_ref}), so only python3-grpcio is needed, no generated code.

usage: cri-pull.py SOCKET REF [TIMEOUT_SECONDS]
"""
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def string_field(buf, number):
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        wire = key & 7
        if wire == 2:
            length, i = read_varint(buf, i)
            if key >> 3 == number:
                return buf[i:i + length].decode()
            i += length
        elif wire == 0:
            _, i = read_varint(buf, i)
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return ""


def main():
    sock, ref = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 300
    request = field(1, field(1, ref.encode()))
    with grpc.insecure_channel("unix://" + sock) as channel:
        pull = channel.unary_unary("/runtime.v1.ImageService/PullImage",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        try:
            response = pull(request, timeout=timeout)
        except grpc.RpcError as e:
            sys.stderr.write("cri-pull: %s: %s\n" % (e.code().name, e.details()))
            return 1
    print(string_field(response, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
