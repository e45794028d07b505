"""Object storage (Swift-compatible): ring, storage nodes and, on top, the proxy."""
