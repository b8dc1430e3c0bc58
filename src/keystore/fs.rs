//! Directory store, upstream's `keystore.fs` layout (`kes-config-cli.md` §5).
