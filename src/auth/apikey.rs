//! API keys (`kes:v1:` + base64(0x00 ‖ Ed25519 seed)), their identities, and the
//! self-signed Ed25519 client certificates made from them (`kes-config-cli.md` §4.2,
//! `kes-crypto.md` §7 and §8.5).
