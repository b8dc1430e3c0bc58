//! The only module allowed `unsafe`.
