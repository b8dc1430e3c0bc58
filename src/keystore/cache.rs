//! The key cache in front of every store (`kes-azure-keystore.md` §7).
