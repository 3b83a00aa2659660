"""Wire stubs generated from proto/myelin/v1/myelin.proto by grpcio-tools (generate_stubs.sh)."""
