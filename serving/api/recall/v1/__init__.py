"""Generated from protos/ by scripts/gen_proto.sh; do not edit."""
