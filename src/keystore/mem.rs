//! In-memory store for `kes server --dev` and tests. Values are zeroized when dropped.
