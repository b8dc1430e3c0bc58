//! Azure Key Vault store (`kes-azure-keystore.md`, `azure-rest.md`).
