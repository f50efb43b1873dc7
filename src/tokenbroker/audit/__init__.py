"""The audit trail behind the recording seam: batched, and (later) chained and signed."""
