//! Prometheus metrics at `/metrics` (filled in by the metrics work of issue 6).
