"""Generated cortex.v1 Protobuf modules (api/proto/v1): do not edit.

Regenerate with sdk/python/scripts/gen_proto.sh.
"""
