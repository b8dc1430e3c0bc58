//! Observability: audit records, leveled error log, metrics.
