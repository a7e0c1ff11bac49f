"""The inference side of brushfire: the GPU worker process, its RPC protocol and its client."""
