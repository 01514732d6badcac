"""The `recall` command line: one entry point for every stage a person runs by hand."""
