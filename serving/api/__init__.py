"""Generated gRPC/protobuf code for the recall.v1 API (see protos/ and `make proto`)."""
