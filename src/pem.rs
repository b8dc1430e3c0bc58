//! PEM files: the one reader of private keys for the whole program (the server's
//! `tls.key`, the CLI's client key, the Azure certificate credential), the certificates of a
//! file that also holds a key, and legacy ("traditional") password-encrypted PEM keys. A leaf
//! module (it imports only the leaves `der`, `gojson` and `hex`), so that `server`, `cli`, `keystore` and `crypto`
//! share it without reaching across layers.
//!
//! Legacy encrypted keys: RFC 1421 headers `Proc-Type: 4,ENCRYPTED` and
//! `DEK-Info: <cipher>,<hex IV>`, RFC 1423 PKCS#7-style padding,
//! exactly as OpenSSL writes them (`openssl ec -aes256`, `openssl rsa -aes128 -traditional`)
//! and as Go's `x509.DecryptPEMBlock` / `x509.EncryptPEMBlock` read and write them. This is
//! what upstream KES decrypts with `tls.password`, what its CLI asks a password for, and what
//! `kes identity new --encrypt` writes (`kes-config-cli.md` §1.1, §4.1, §4.3; the writer with
//! a fresh random IV is `crypto::legacy_pem::encrypt`, since randomness belongs to `crypto`).
//!
//! The key is OpenSSL's `EVP_BytesToKey` with MD5, one iteration and the first 8 bytes of
//! the IV as salt: `D1 = MD5(password ‖ salt)`, `Di = MD5(Di-1 ‖ password ‖ salt)`, key =
//! the first 16/24/32 bytes of `D1 ‖ D2 ‖ …`. The cipher is AES in CBC mode. The format is
//! weak by today's standards (one MD5 round is no password hash, and CBC without a MAC does
//! not detect tampering: a modified file decrypts to an error or to another key, which the
//! key-certificate match then refuses): an encrypted key file is still only as safe as its
//! password and its file permissions.
//!
//! What is written by hand and why: MD5 (RFC 1321) because neither ring nor the rest of the
//! tree has it, and it is used *only* as this key-derivation function, never for anything
//! else; CBC because it is a few lines of XOR. The AES block function comes from the
//! RustCrypto `aes` crate (ring exposes no raw block function); TLS and every KES key stay on
//! ring. Every intermediate that depends on the password (MD5 state, derived key, AES key
//! schedule, decrypted buffer) is wiped on drop.
//!
//! Not supported, with a message that says what to do: DES-CBC and DES-EDE3-CBC (Go reads
//! them; OpenSSL 3 only writes them on request), and PKCS#8 `ENCRYPTED PRIVATE KEY`, which
//! upstream KES does not read either.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// AES's block size, which is also the IV size of every supported cipher.
const BLOCK: usize = 16;
/// Base64 characters per PEM body line (Go's `pem.Encode`, OpenSSL).
const LINE: usize = 64;

/// Why an encrypted PEM key could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// The padding (or, rarely, the key structure under a valid-looking padding) is wrong:
    /// as Go says, a wrong password.
    IncorrectPassword,
    /// A cipher or an encryption scheme this program does not decrypt; the text says what
    /// to do instead.
    Unsupported(String),
    /// The PEM block is broken.
    Malformed(&'static str),
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemError::IncorrectPassword => f.write_str("incorrect password"),
            PemError::Unsupported(s) => f.write_str(s),
            PemError::Malformed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for PemError {}

/// What to say about PKCS#8 `ENCRYPTED PRIVATE KEY` files.
pub const PKCS8_UNSUPPORTED: &str = "PKCS#8 encrypted private keys ('BEGIN ENCRYPTED PRIVATE KEY') \
    are not supported (nor by upstream KES): decrypt the key once with 'openssl pkey -in KEY -out \
    KEY.plain' and protect the file with permissions, or, for an RSA or EC key, re-encrypt it in \
    the legacy format with 'openssl pkey -in KEY -aes256 -traditional -out KEY.aes'";

/// True if the first private key of `pem` is a legacy encrypted block (a `DEK-Info` header,
/// as Go's `x509.IsEncryptedPEMBlock`, or `Proc-Type: 4,ENCRYPTED`). Certificates before the
/// key are skipped.
pub fn is_encrypted(pem: &[u8]) -> bool {
    match find_key_block(as_text(pem)) {
        Some(b) => b.label != "ENCRYPTED PRIVATE KEY" && b.is_legacy_encrypted(),
        None => false,
    }
}

/// True if the first private key of `pem` is PKCS#8 `ENCRYPTED PRIVATE KEY`, which
/// [`decrypt`] refuses with [`PKCS8_UNSUPPORTED`].
pub fn is_pkcs8_encrypted(pem: &[u8]) -> bool {
    find_key_block(as_text(pem)).is_some_and(|b| b.label == "ENCRYPTED PRIVATE KEY")
}

/// A legacy encrypted key block, checked for everything but the password: its cipher is
/// supported and its IV and ciphertext are well-formed. Lets a caller refuse a key it
/// cannot decrypt before asking anyone for a password.
pub struct EncryptedKey {
    label: String,
    cipher: Cipher,
    iv: [u8; BLOCK],
    ciphertext: Vec<u8>,
}

impl fmt::Debug for EncryptedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedKey")
            .field("label", &self.label)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// Parses the first private key block of `pem` as a legacy encrypted key.
pub fn parse(pem: &[u8]) -> Result<EncryptedKey, PemError> {
    let block = find_key_block(as_text(pem))
        .ok_or(PemError::Malformed("no PEM-encoded private key found"))?;
    if block.label == "ENCRYPTED PRIVATE KEY" {
        return Err(PemError::Unsupported(PKCS8_UNSUPPORTED.into()));
    }
    let dek = block
        .header("DEK-Info")
        .ok_or(PemError::Malformed("the private key is not encrypted: no DEK-Info header"))?;
    let (mode, hex_iv) =
        dek.split_once(',').ok_or(PemError::Malformed("malformed DEK-Info header"))?;
    let cipher = Cipher::by_name(mode.trim())?;
    let iv: [u8; BLOCK] = crate::hex::decode(hex_iv.trim())
        .ok_or(PemError::Malformed("malformed IV in the DEK-Info header"))?
        .try_into()
        .map_err(|_| PemError::Malformed("incorrect IV size in the DEK-Info header"))?;
    let ciphertext =
        block.data().ok_or(PemError::Malformed("invalid base64 in the PEM block"))?.to_vec();
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK) {
        return Err(PemError::Malformed("encrypted PEM data is not a multiple of the block size"));
    }
    Ok(EncryptedKey { label: block.label.to_string(), cipher, iv, ciphertext })
}

impl EncryptedKey {
    /// The PEM label, such as `EC PRIVATE KEY`: the type of the key inside.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The DER of the key. A wrong password is [`PemError::IncorrectPassword`], also in the
    /// ~1/256 case where it happens to give a valid padding: the DER must then still be one
    /// well-formed key of the label's type.
    pub fn decrypt(&self, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, PemError> {
        let aes = Aes::new(self.cipher, password, &self.iv);
        let mut data = Zeroizing::new(self.ciphertext.clone());
        cbc_decrypt(&aes, &self.iv, &mut data)?;
        drop(aes);

        // RFC 1423: 1..=16 bytes, each equal to the count. Anything else: a wrong password.
        let last = usize::from(*data.last().ok_or(PemError::IncorrectPassword)?);
        if last == 0 || last > BLOCK || last > data.len() {
            return Err(PemError::IncorrectPassword);
        }
        if data[data.len() - last..].iter().any(|&b| usize::from(b) != last) {
            return Err(PemError::IncorrectPassword);
        }
        let len = data.len() - last;
        data.truncate(len);
        if !der_matches_label(&self.label, &data) {
            return Err(PemError::IncorrectPassword);
        }
        Ok(data)
    }
}

/// Decrypts the first private key block of `pem` with `password`: its PEM label (such as
/// `EC PRIVATE KEY`) and its DER ([`parse`], then [`EncryptedKey::decrypt`]).
pub fn decrypt(pem: &[u8], password: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), PemError> {
    let key = parse(pem)?;
    let der = key.decrypt(password)?;
    Ok((key.label, der))
}

/// Why no private key came out of a PEM file ([`load_private_key`]). `Display` gives the
/// server's texts; callers with a better hint (the Azure credential names its variable)
/// replace the ones they know better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// PKCS#8 `ENCRYPTED PRIVATE KEY`, refused as upstream refuses it.
    Pkcs8Encrypted,
    /// A legacy encrypted key and no (or an empty) password.
    PasswordRequired,
    /// A legacy encrypted key that could not be decrypted (wrong password, cipher, block).
    Encrypted(PemError),
    /// No private key block at all.
    NotFound,
    /// A private key block that is not one.
    Invalid(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Pkcs8Encrypted => write!(f, "private key is encrypted: {PKCS8_UNSUPPORTED}"),
            KeyError::PasswordRequired => {
                f.write_str("private key is encrypted: password required")
            }
            KeyError::Encrypted(e) => write!(f, "private key is encrypted: {e}"),
            KeyError::NotFound => f.write_str("no PEM-encoded private key found"),
            KeyError::Invalid(e) => write!(f, "invalid PEM private key: {e}"),
        }
    }
}

/// The one private-key loader of the program (the server's `tls.key`, the CLI's client
/// key, the Azure certificate credential): the first private key of a PEM file as PKCS#8,
/// SEC1 or PKCS#1 DER; a legacy encrypted one (`Proc-Type: 4,ENCRYPTED`) decrypted with
/// `password`; PKCS#8 `ENCRYPTED PRIVATE KEY` refused. Certificates around the key are
/// skipped.
pub fn load_private_key(
    pem: &[u8],
    password: Option<&[u8]>,
) -> Result<PrivateKeyDer<'static>, KeyError> {
    if is_pkcs8_encrypted(pem) {
        return Err(KeyError::Pkcs8Encrypted);
    }
    if is_encrypted(pem) {
        let password = password.filter(|p| !p.is_empty()).ok_or(KeyError::PasswordRequired)?;
        let (label, der) = decrypt(pem, password).map_err(KeyError::Encrypted)?;
        return private_key_der(&label, &der).map_err(KeyError::Invalid);
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => KeyError::NotFound,
        e => KeyError::Invalid(e.to_string()),
    })
}

/// The DER of a decrypted key as the type its PEM label names.
pub fn private_key_der(label: &str, der: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
    match label {
        "PRIVATE KEY" => Ok(PrivatePkcs8KeyDer::from(der.to_vec()).into()),
        "EC PRIVATE KEY" => Ok(PrivateSec1KeyDer::from(der.to_vec()).into()),
        "RSA PRIVATE KEY" => Ok(PrivatePkcs1KeyDer::from(der.to_vec()).into()),
        other => Err(format!("unsupported private key type '{other}'")),
    }
}

/// The PEM label of a loaded key's type, the inverse of [`private_key_der`].
pub fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

/// Encrypts `der` as a legacy PEM block labelled `label` with AES-256-CBC, the IV `iv` and
/// the key derived from `password`, byte for byte as Go's `x509.EncryptPEMBlock` with
/// `PEMCipherAES256` and `pem.Encode` write it (lower-case hex IV, 64-column base64). The IV
/// must be fresh and random for every key written: `crypto::legacy_pem::encrypt` draws it.
pub fn encrypt_with_iv(
    label: &str,
    der: &[u8],
    password: &[u8],
    iv: &[u8; BLOCK],
) -> Zeroizing<String> {
    let aes = Aes::new(Cipher::Aes256, password, iv);
    let pad = BLOCK - der.len() % BLOCK;
    let mut data = Zeroizing::new(Vec::with_capacity(der.len() + pad));
    data.extend_from_slice(der);
    data.resize(der.len() + pad, pad as u8);
    cbc_encrypt(&aes, iv, &mut data);
    drop(aes);

    let b64 = STANDARD.encode(data.as_slice());
    let mut pem = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / LINE + 200));
    pem.push_str(&format!("-----BEGIN {label}-----\n"));
    pem.push_str("Proc-Type: 4,ENCRYPTED\n");
    pem.push_str("DEK-Info: AES-256-CBC,");
    pem.push_str(&crate::hex::encode(iv));
    pem.push_str("\n\n");
    for line in b64.as_bytes().chunks(LINE) {
        // base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The ciphers of a `DEK-Info` header that are decrypted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
}

impl Cipher {
    fn by_name(name: &str) -> Result<Cipher, PemError> {
        match name {
            "AES-128-CBC" => Ok(Cipher::Aes128),
            "AES-192-CBC" => Ok(Cipher::Aes192),
            "AES-256-CBC" => Ok(Cipher::Aes256),
            "DES-CBC" | "DES-EDE3-CBC" => Err(PemError::Unsupported(format!(
                "unsupported cipher {name}: only AES-128-CBC, AES-192-CBC and AES-256-CBC \
                 encrypted keys can be read; re-encrypt the key with 'openssl pkey -in KEY \
                 -aes256 -traditional -out KEY.aes', or decrypt it with 'openssl pkey -in KEY \
                 -out KEY.plain' and protect the file with permissions"
            ))),
            _ => Err(PemError::Unsupported(format!(
                "unsupported cipher '{name}' in the DEK-Info header: only AES-128-CBC, \
                 AES-192-CBC and AES-256-CBC encrypted keys can be read"
            ))),
        }
    }
}

/// An AES key schedule (wiped on drop by the `aes` crate's `zeroize` feature).
enum Aes {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

impl Aes {
    /// The cipher keyed with the key derived from `password` and the IV's salt.
    fn new(cipher: Cipher, password: &[u8], iv: &[u8; BLOCK]) -> Aes {
        match cipher {
            Cipher::Aes128 => {
                Aes::A128(aes::Aes128::new((&*derive_key::<16>(password, iv)).into()))
            }
            Cipher::Aes192 => {
                Aes::A192(aes::Aes192::new((&*derive_key::<24>(password, iv)).into()))
            }
            Cipher::Aes256 => {
                Aes::A256(aes::Aes256::new((&*derive_key::<32>(password, iv)).into()))
            }
        }
    }

    fn encrypt(&self, block: &mut aes::Block) {
        match self {
            Aes::A128(c) => c.encrypt_block(block),
            Aes::A192(c) => c.encrypt_block(block),
            Aes::A256(c) => c.encrypt_block(block),
        }
    }

    fn decrypt(&self, block: &mut aes::Block) {
        match self {
            Aes::A128(c) => c.decrypt_block(block),
            Aes::A192(c) => c.decrypt_block(block),
            Aes::A256(c) => c.decrypt_block(block),
        }
    }
}

/// CBC decryption in place: `P_i = D(C_i) ⊕ C_{i-1}`, `C_0 = iv`. `data` is whole blocks.
fn cbc_decrypt(aes: &Aes, iv: &[u8; BLOCK], data: &mut [u8]) -> Result<(), PemError> {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let block: &mut aes::Block =
            chunk.try_into().map_err(|_| PemError::Malformed("partial block"))?;
        let this: [u8; BLOCK] = block.0;
        aes.decrypt(block);
        for (p, c) in block.iter_mut().zip(prev) {
            *p ^= c;
        }
        prev = this;
    }
    Ok(())
}

/// CBC encryption in place: `C_i = E(P_i ⊕ C_{i-1})`, `C_0 = iv`. `data` is whole blocks.
fn cbc_encrypt(aes: &Aes, iv: &[u8; BLOCK], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        for (p, c) in chunk.iter_mut().zip(prev) {
            *p ^= c;
        }
        if let Ok(block) = <&mut aes::Block>::try_from(&mut *chunk) {
            aes.encrypt(block);
            prev = block.0;
        }
    }
}

/// OpenSSL's `EVP_BytesToKey(cipher, MD5, salt = iv[..8], password, count = 1)`, key part
/// only (`N` bytes), as Go's `rfc1423Algo.deriveKey`.
fn derive_key<const N: usize>(password: &[u8], iv: &[u8; BLOCK]) -> Zeroizing<[u8; N]> {
    let salt = &iv[..8];
    let mut key = Zeroizing::new([0u8; N]);
    let mut digest = Zeroizing::new([0u8; 16]);
    let mut filled = 0;
    while filled < N {
        let mut md5 = Md5::new();
        if filled > 0 {
            md5.update(digest.as_slice());
        }
        md5.update(password);
        md5.update(salt);
        md5.finalize_into(&mut digest);
        let take = (N - filled).min(16);
        key[filled..filled + take].copy_from_slice(&digest[..take]);
        filled += take;
    }
    key
}

/// MD5 (RFC 1321). Used only as the key-derivation function of legacy encrypted PEM keys
/// (`derive_key`), because that format requires it; it is not used, and must not be used,
/// for anything else. Its state depends on the password, so it is wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Md5 {
    state: [u32; 4],
    buffer: [u8; 64],
    buffered: usize,
    length: u64,
}

/// Per-round left rotations (RFC 1321 §3.4).
const MD5_S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// `T[i] = floor(2^32 · |sin(i + 1)|)` (RFC 1321 §3.4).
const MD5_T: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

impl Md5 {
    fn new() -> Md5 {
        Md5 {
            state: [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476],
            buffer: [0; 64],
            buffered: 0,
            length: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let take = (64 - self.buffered).min(data.len());
            self.buffer[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 64 {
                return;
            }
            let block = self.buffer;
            self.compress(&block);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            // chunks_exact yields 64-byte slices.
            if let Ok(block) = <&[u8; 64]>::try_from(block) {
                self.compress(block);
            }
        }
        let rest = blocks.remainder();
        self.buffer[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    fn finalize_into(mut self, out: &mut [u8; 16]) {
        let bits = self.length.wrapping_mul(8);
        // 0x80, zeros up to 56 mod 64, then the bit length, little-endian (RFC 1321 §3.1-3.2).
        let pad_len = if self.buffered < 56 { 56 - self.buffered } else { 120 - self.buffered };
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let length = self.length;
        self.update(&pad[..pad_len]);
        self.update(&bits.to_le_bytes());
        self.length = length;
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut m = [0u32; 16];
        for (w, b) in m.iter_mut().zip(block.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let [mut a, mut b, mut c, mut d] = self.state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated =
                a.wrapping_add(f).wrapping_add(MD5_T[i]).wrapping_add(m[g]).rotate_left(MD5_S[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        self.state[0] = self.state[0].wrapping_add(a);
        self.state[1] = self.state[1].wrapping_add(b);
        self.state[2] = self.state[2].wrapping_add(c);
        self.state[3] = self.state[3].wrapping_add(d);
        m.zeroize();
    }
}

/// One PEM block as text: label, `Key: value` headers, base64 body lines.
struct RawBlock<'a> {
    label: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: Vec<&'a str>,
}

impl<'a> RawBlock<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// The body's bytes, decoded as Go's `pem.Decode` decodes them: whitespace dropped, then
    /// Go's `base64.StdEncoding` (padding required), the one base64 rule of the program.
    fn data(&self) -> Option<Zeroizing<Vec<u8>>> {
        let body: Zeroizing<Vec<u8>> = Zeroizing::new(
            self.body.iter().flat_map(|l| l.bytes()).filter(|c| !c.is_ascii_whitespace()).collect(),
        );
        crate::gojson::decode_base64_std(&body)
    }

    fn is_legacy_encrypted(&self) -> bool {
        self.header("DEK-Info").is_some()
            || self.header("Proc-Type").is_some_and(|v| v.contains("ENCRYPTED"))
    }
}

/// The first block whose label is `PRIVATE KEY` or ends with ` PRIVATE KEY` (how upstream
/// KES finds the key in a file that may also hold certificates).
fn find_key_block(text: &str) -> Option<RawBlock<'_>> {
    raw_blocks(text).find(|b| b.label == "PRIVATE KEY" || b.label.ends_with(" PRIVATE KEY"))
}

/// Every complete PEM block of `text`. Headers are the lines with a `:` right after the
/// BEGIN line, as in Go's `pem.Decode`; a block without its matching END line is skipped.
fn raw_blocks(text: &str) -> impl Iterator<Item = RawBlock<'_>> {
    let mut lines = text.lines().map(str::trim_end);
    std::iter::from_fn(move || {
        while let Some(line) = lines.next() {
            let Some(label) =
                line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----"))
            else {
                continue;
            };
            let mut headers = Vec::new();
            let mut body = Vec::new();
            let mut in_headers = true;
            let mut ended = false;
            for line in lines.by_ref() {
                if line.starts_with("-----END ") {
                    ended = line == format!("-----END {label}-----");
                    break;
                }
                if in_headers && let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim(), v.trim()));
                    continue;
                }
                in_headers = false;
                body.push(line);
            }
            if ended {
                return Some(RawBlock { label, headers, body });
            }
        }
        None
    })
}

/// The DER of every `CERTIFICATE` block of a PEM file that may also hold a key, encrypted
/// or not (the Azure certificate credential's file). Other blocks are skipped.
pub fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for b in raw_blocks(as_text(pem)).filter(|b| b.label == "CERTIFICATE") {
        out.push(b.data().ok_or("invalid base64 in a CERTIFICATE block")?.to_vec());
    }
    Ok(out)
}

/// The text of a PEM file up to its first byte that is not UTF-8 (PEM is ASCII; a lossy
/// copy would leave an unwiped copy of a plain key file behind).
fn as_text(pem: &[u8]) -> &str {
    match std::str::from_utf8(pem) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&pem[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Whether `der` is one DER SEQUENCE that fills it exactly and that rustls-pki-types
/// recognises as the key type the PEM label names (PKCS#8, SEC1 or PKCS#1). Decrypting with
/// a wrong password yields random bytes; they pass the padding check one time in ~256, and
/// this check then catches them.
fn der_matches_label(label: &str, der: &[u8]) -> bool {
    use rustls_pki_types::PrivateKeyDer;
    if !single_sequence(der) {
        return false;
    }
    match (label, PrivateKeyDer::try_from(der)) {
        (_, Err(_)) => false,
        ("PRIVATE KEY", Ok(PrivateKeyDer::Pkcs8(_))) => true,
        ("EC PRIVATE KEY", Ok(PrivateKeyDer::Sec1(_))) => true,
        ("RSA PRIVATE KEY", Ok(PrivateKeyDer::Pkcs1(_))) => true,
        ("PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY", Ok(_)) => false,
        // Other labels (DSA, …) are not TLS keys; the caller refuses them by label.
        (_, Ok(_)) => true,
    }
}

/// `30 len contents` with a minimal definite length that ends exactly at the end.
fn single_sequence(der: &[u8]) -> bool {
    matches!(crate::der::tlv_strict(der), Some((0x30, _, rest)) if rest.is_empty())
}

#[cfg(test)]
mod tests {
    //! MD5 against RFC 1321's test suite, the key derivation against `openssl enc -P`, and
    //! decryption of keys that the real `openssl` CLI encrypted (the format OpenSSL, Go and
    //! upstream KES share): the DER must equal what `openssl` itself decrypts. Our own
    //! output must decrypt with `openssl` too.

    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::hex::{decode as unhex, encode as hex};

    fn md5(data: &[u8]) -> String {
        let mut h = Md5::new();
        h.update(data);
        finish(h)
    }

    fn finish(h: Md5) -> String {
        let mut out = [0u8; 16];
        h.finalize_into(&mut out);
        hex(&out)
    }

    /// [`encrypt_with_iv`] with a random IV, as `crypto::legacy_pem::encrypt` writes keys.
    fn encrypt(label: &str, der: &[u8], password: &[u8]) -> Option<Zeroizing<String>> {
        let mut iv = [0u8; BLOCK];
        getrandom::getrandom(&mut iv).ok()?;
        Some(encrypt_with_iv(label, der, password, &iv))
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            let mut rnd = [0u8; 8];
            getrandom::getrandom(&mut rnd).unwrap();
            let p = std::env::temp_dir().join(format!("kes-legacy-pem-{}", hex(&rnd)));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `openssl <args>`, returning stdout; panics with stderr on failure.
    #[track_caller]
    fn openssl(args: &[&str]) -> Vec<u8> {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl CLI is needed for the compatibility tests");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// A fresh key of `kind` ("ec" or "rsa") in `dir`, plain PEM.
    fn plain_key(dir: &Dir, kind: &str) -> PathBuf {
        let p = dir.join(&format!("{kind}.pem"));
        match kind {
            "ec" => {
                openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path(&p)])
            }
            "rsa" => openssl(&["genrsa", "-out", path(&p), "1024"]),
            "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", path(&p)]),
            _ => unreachable!(),
        };
        p
    }

    #[test]
    fn md5_passes_the_rfc_1321_test_suite() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(md5(input.as_bytes()), want, "MD5({input:?})");
        }
    }

    /// Every length across the padding boundaries (55/56, 63/64, 119/120 …), fed whole and
    /// in odd pieces, against one reference: the same bytes hashed in one `update`.
    #[test]
    fn md5_is_independent_of_how_the_input_is_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let whole = md5(&data[..len]);
            for step in [1, 3, 17, 63, 64, 65] {
                let mut h = Md5::new();
                for piece in data[..len].chunks(step) {
                    h.update(piece);
                }
                assert_eq!(finish(h), whole, "len {len} step {step}");
            }
        }
        // Spot checks against the openssl CLI at the boundaries.
        let dir = Dir::new();
        for len in [55, 56, 63, 64, 65, 119, 120, 299] {
            let f = dir.join("in");
            std::fs::write(&f, &data[..len]).unwrap();
            let out = String::from_utf8(openssl(&["dgst", "-md5", "-r", path(&f)])).unwrap();
            assert_eq!(out.split_whitespace().next().unwrap(), md5(&data[..len]), "len {len}");
        }
    }

    /// `openssl enc -P` prints the key EVP_BytesToKey derives (MD5, one round, the salt).
    #[test]
    fn key_derivation_is_openssls_evp_bytes_to_key() {
        let iv: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";
        let derive = |password: &str, len: usize| match len {
            16 => hex(derive_key::<16>(password.as_bytes(), &iv).as_slice()),
            24 => hex(derive_key::<24>(password.as_bytes(), &iv).as_slice()),
            _ => hex(derive_key::<32>(password.as_bytes(), &iv).as_slice()),
        };
        for (cipher, len) in [("-aes-128-cbc", 16), ("-aes-192-cbc", 24), ("-aes-256-cbc", 32)] {
            for password in ["secret", "", "a much longer password with spaces, ümlauts"] {
                let out = openssl(&[
                    "enc",
                    cipher,
                    "-P",
                    "-md",
                    "md5",
                    "-S",
                    &hex(&iv[..8]),
                    "-pass",
                    &format!("pass:{password}"),
                ]);
                let out = String::from_utf8(out).unwrap();
                let key = out
                    .lines()
                    .find_map(|l| l.strip_prefix("key="))
                    .unwrap()
                    .trim()
                    .to_ascii_lowercase();
                assert_eq!(derive(password, len), key, "{cipher} {password:?}");
            }
        }
    }

    /// Keys encrypted by the openssl CLI decrypt to exactly the DER openssl decrypts them to.
    #[test]
    fn decrypts_what_openssl_encrypted() {
        let dir = Dir::new();
        for (kind, cipher, label) in [
            ("ec", "-aes256", "EC PRIVATE KEY"),
            ("ec", "-aes192", "EC PRIVATE KEY"),
            ("ec", "-aes128", "EC PRIVATE KEY"),
            ("rsa", "-aes128", "RSA PRIVATE KEY"),
            ("rsa", "-aes256", "RSA PRIVATE KEY"),
        ] {
            let plain = plain_key(&dir, kind);
            let enc = dir.join("enc.pem");
            let mut args = vec![kind, "-in", path(&plain), cipher, "-passout", "pass:secret"];
            if kind == "rsa" {
                args.push("-traditional");
            }
            args.extend(["-out", path(&enc)]);
            openssl(&args);
            let pem = std::fs::read(&enc).unwrap();
            assert!(is_encrypted(&pem), "{kind} {cipher}");
            assert!(!is_pkcs8_encrypted(&pem));
            // OpenSSL 3 prints RSA keys as PKCS#8 unless told otherwise.
            let mut args =
                vec![kind, "-in", path(&enc), "-passin", "pass:secret", "-outform", "DER"];
            if kind == "rsa" {
                args.push("-traditional");
            }
            let want = openssl(&args);
            let (got_label, der) = decrypt(&pem, b"secret").unwrap();
            assert_eq!(got_label, label);
            assert_eq!(hex(&der), hex(&want), "{kind} {cipher}");
            assert_eq!(decrypt(&pem, b"secreT").unwrap_err(), PemError::IncorrectPassword);
            assert_eq!(decrypt(&pem, b"").unwrap_err(), PemError::IncorrectPassword);
            // The key is found after certificates, and with CRLF line ends.
            let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
            let mixed = format!("{cert}{}", String::from_utf8_lossy(&pem)).replace('\n', "\r\n");
            assert_eq!(decrypt(mixed.as_bytes(), b"secret").unwrap().1.as_slice(), want.as_slice());
        }
    }

    /// Hundreds of wrong passwords: about one in 256 yields a valid padding, and every one
    /// must still be `IncorrectPassword`, never garbage returned as a key.
    #[test]
    fn every_wrong_password_is_incorrect_password() {
        let dir = Dir::new();
        let plain = plain_key(&dir, "ec");
        let enc = dir.join("enc.pem");
        openssl(&[
            "ec",
            "-in",
            path(&plain),
            "-aes256",
            "-passout",
            "pass:right",
            "-out",
            path(&enc),
        ]);
        let pem = std::fs::read(&enc).unwrap();
        for i in 0..2000 {
            let wrong = format!("wrong-{i}");
            assert_eq!(decrypt(&pem, wrong.as_bytes()).unwrap_err(), PemError::IncorrectPassword);
        }
        assert!(decrypt(&pem, b"right").is_ok());
    }

    /// A fixed SEC1 P-256 key and IV, so that the wrong passwords below that happen to give
    /// a valid padding are the same on every run.
    const FIXED_EC_KEY: &str = "307702010104202037b01670ec1590c583158ea4efe12ccbb454970aa41318ad2410646251590fa00a06082a8648ce3d030107a144034200049fd0f4075192ddc4a196814649ee918d20fe2c66dff0715c9f23a3926f93a7ecd14bd29007ef732640970f8ae32d4a1cb75b9542e6993a6775c29edf8e97a92a";

    /// Wrong passwords that pass the padding check exist (about 1 in 256), and the key
    /// check turns every one of them into `IncorrectPassword`.
    #[test]
    fn wrong_passwords_with_a_valid_padding_are_caught_by_the_key_check() {
        let der = unhex(FIXED_EC_KEY).unwrap();
        let iv = [0x42; 16];
        let pem = encrypt_with_iv("EC PRIVATE KEY", &der, b"right", &iv);
        let b64: String = pem.lines().skip(4).take_while(|l| !l.starts_with("-----")).collect();
        let ciphertext = STANDARD.decode(b64).unwrap();
        let mut padded = 0;
        for i in 0..4000 {
            let wrong = format!("wrong-{i}");
            let mut data = ciphertext.clone();
            cbc_decrypt(&Aes::new(Cipher::Aes256, wrong.as_bytes(), &iv), &iv, &mut data).unwrap();
            let last = usize::from(data[data.len() - 1]);
            if (1..=16).contains(&last)
                && data[data.len() - last..].iter().all(|&b| usize::from(b) == last)
            {
                padded += 1;
            }
            assert_eq!(
                decrypt(pem.as_bytes(), wrong.as_bytes()).unwrap_err(),
                PemError::IncorrectPassword
            );
        }
        assert!(padded > 0, "no wrong password gave a valid padding: the case is not exercised");
        assert_eq!(decrypt(pem.as_bytes(), b"right").unwrap().1.as_slice(), der.as_slice());
    }

    #[test]
    fn a_valid_padding_over_a_non_key_is_an_incorrect_password() {
        // Encrypt garbage that ends in a valid padding: decrypting it with the right
        // password passes the padding check but not the key check.
        let iv = [7u8; 16];
        for label in ["EC PRIVATE KEY", "PRIVATE KEY", "RSA PRIVATE KEY"] {
            let pem = encrypt_with_iv(label, &[0x41; 40], b"pw", &iv);
            assert_eq!(decrypt(pem.as_bytes(), b"pw").unwrap_err(), PemError::IncorrectPassword);
        }
        // A SEC1 key under the PKCS#8 label is not a PKCS#8 key.
        let dir = Dir::new();
        let plain = plain_key(&dir, "ec");
        let der = openssl(&["ec", "-in", path(&plain), "-outform", "DER"]);
        let pem = encrypt_with_iv("PRIVATE KEY", &der, b"pw", &iv);
        assert_eq!(decrypt(pem.as_bytes(), b"pw").unwrap_err(), PemError::IncorrectPassword);
        let pem = encrypt_with_iv("EC PRIVATE KEY", &der, b"pw", &iv);
        assert_eq!(decrypt(pem.as_bytes(), b"pw").unwrap().1.as_slice(), der.as_slice());
    }

    #[test]
    fn round_trip_and_go_layout() {
        let dir = Dir::new();
        for (kind, label) in [("ec", "EC PRIVATE KEY"), ("rsa", "RSA PRIVATE KEY")] {
            let plain = plain_key(&dir, kind);
            let mut args = vec![kind, "-in", path(&plain), "-outform", "DER"];
            if kind == "rsa" {
                args.push("-traditional");
            }
            let der = openssl(&args);
            let pem = encrypt(label, &der, b"pass word").unwrap();
            let (l, back) = decrypt(pem.as_bytes(), b"pass word").unwrap();
            assert_eq!((l.as_str(), back.as_slice()), (label, der.as_slice()));
            let lines: Vec<&str> = pem.lines().collect();
            assert_eq!(lines[0], format!("-----BEGIN {label}-----"));
            assert_eq!(lines[1], "Proc-Type: 4,ENCRYPTED");
            let iv = lines[2].strip_prefix("DEK-Info: AES-256-CBC,").unwrap();
            assert_eq!(iv.len(), 32);
            assert!(iv.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{iv}");
            assert_eq!(lines[3], "");
            assert!(lines[4..lines.len() - 1].iter().all(|l| l.len() <= 64));
            assert!(lines[4..lines.len() - 2].iter().all(|l| l.len() == 64));
            assert_eq!(*lines.last().unwrap(), format!("-----END {label}-----"));
            assert!(pem.ends_with('\n'));
            // A fresh IV each time.
            assert_ne!(*encrypt(label, &der, b"pass word").unwrap(), *pem);
        }
        // Every length of plaintext, including whole blocks (a full block of padding).
        for len in 0..70 {
            let data = vec![0x5a; len];
            let pem = encrypt_with_iv("X PRIVATE KEY", &data, b"k", &[9; 16]);
            let b64: String = pem.lines().skip(4).take_while(|l| !l.starts_with("-----")).collect();
            assert_eq!(STANDARD.decode(b64).unwrap().len(), (len / 16 + 1) * 16);
        }
    }

    /// What we write, openssl reads: EC with `openssl ec`, and the Ed25519 PKCS#8 key that
    /// `kes identity new --encrypt` writes with `openssl pkey`.
    #[test]
    fn openssl_decrypts_what_we_encrypt() {
        let dir = Dir::new();
        for (kind, label, tool) in [
            ("ec", "EC PRIVATE KEY", "ec"),
            ("ed25519", "PRIVATE KEY", "pkey"),
            ("rsa", "RSA PRIVATE KEY", "rsa"),
        ] {
            let plain = plain_key(&dir, kind);
            let mut args = vec![tool, "-in", path(&plain), "-outform", "DER"];
            if kind == "rsa" {
                args.push("-traditional");
            }
            let der = openssl(&args);
            let enc = dir.join("ours.pem");
            std::fs::write(&enc, encrypt(label, &der, b"s3cret").unwrap().as_bytes()).unwrap();
            let mut args =
                vec![tool, "-in", path(&enc), "-passin", "pass:s3cret", "-outform", "DER"];
            if kind == "rsa" {
                args.push("-traditional");
            }
            assert_eq!(openssl(&args), der, "{kind}");
            let o = Command::new("openssl")
                .args([tool, "-in", path(&enc), "-passin", "pass:wrong", "-outform", "DER"])
                .output()
                .unwrap();
            assert!(!o.status.success(), "{kind}: openssl accepted a wrong password");
        }
    }

    #[test]
    fn des_and_pkcs8_encryption_are_refused_with_what_to_do() {
        let dir = Dir::new();
        let plain = plain_key(&dir, "ec");
        let enc = dir.join("des3.pem");
        openssl(&[
            "ec",
            "-in",
            path(&plain),
            "-des3",
            "-passout",
            "pass:secret",
            "-out",
            path(&enc),
        ]);
        let pem = std::fs::read(&enc).unwrap();
        assert!(is_encrypted(&pem));
        let PemError::Unsupported(msg) = decrypt(&pem, b"secret").unwrap_err() else { panic!() };
        assert!(msg.starts_with("unsupported cipher DES-EDE3-CBC: "), "{msg}");
        assert!(msg.contains("openssl pkey -in KEY -aes256 -traditional"), "{msg}");
        let des = String::from_utf8(pem).unwrap().replace("DES-EDE3-CBC,", "DES-CBC,");
        let e = decrypt(des.as_bytes(), b"secret").unwrap_err().to_string();
        assert!(e.starts_with("unsupported cipher DES-CBC: "), "{e}");
        let bf = des.replace("DES-CBC,", "BF-CBC,");
        let e = decrypt(bf.as_bytes(), b"secret").unwrap_err().to_string();
        assert!(e.starts_with("unsupported cipher 'BF-CBC'"), "{e}");

        let p8 = dir.join("p8.pem");
        openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            path(&plain),
            "-v2",
            "aes256",
            "-passout",
            "pass:secret",
            "-out",
            path(&p8),
        ]);
        let pem = std::fs::read(&p8).unwrap();
        assert!(is_pkcs8_encrypted(&pem));
        assert!(!is_encrypted(&pem));
        assert_eq!(
            decrypt(&pem, b"secret").unwrap_err(),
            PemError::Unsupported(PKCS8_UNSUPPORTED.into())
        );
    }

    #[test]
    fn broken_blocks_are_malformed() {
        let block = |headers: &str, body: &str| {
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{headers}\n{body}\n-----END EC PRIVATE KEY-----\n"
            )
        };
        let hdr = |dek: &str| format!("Proc-Type: 4,ENCRYPTED\nDEK-Info: {dek}\n");
        let b16 = STANDARD.encode([0u8; 16]);
        let iv = "00112233445566778899AABBCCDDEEFF";
        for (pem, want) in [
            ("nothing".to_string(), "no PEM-encoded private key found"),
            (
                "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
                "no PEM-encoded private key found",
            ),
            (block("", &b16), "the private key is not encrypted: no DEK-Info header"),
            (block(&hdr("AES-256-CBC"), &b16), "malformed DEK-Info header"),
            (block(&hdr("AES-256-CBC,0011"), &b16), "incorrect IV size in the DEK-Info header"),
            (block(&hdr("AES-256-CBC,zz"), &b16), "malformed IV in the DEK-Info header"),
            (block(&hdr(&format!("AES-256-CBC,{iv}")), "!!!"), "invalid base64 in the PEM block"),
            (
                block(&hdr(&format!("AES-256-CBC,{iv}")), &STANDARD.encode([0u8; 15])),
                "encrypted PEM data is not a multiple of the block size",
            ),
            (
                block(&hdr(&format!("AES-256-CBC,{iv}")), ""),
                "encrypted PEM data is not a multiple of the block size",
            ),
            (
                // No END line.
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n".into(),
                "no PEM-encoded private key found",
            ),
        ] {
            assert_eq!(
                decrypt(pem.as_bytes(), b"pw").unwrap_err(),
                PemError::Malformed(want),
                "{pem}"
            );
        }
        assert!(is_encrypted(block(&hdr("AES-256-CBC"), &b16).as_bytes()));
        assert!(!is_encrypted(block("", &b16).as_bytes()));
        assert!(!is_encrypted(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"));
    }

    /// Bodies are Go's base64, as `pem.Decode` reads them: whitespace anywhere, padding
    /// required, non-zero trailing bits accepted, the URL-safe alphabet refused.
    #[test]
    fn bodies_are_gos_base64() {
        let cert = |body: &str| {
            let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            certificates(pem.as_bytes())
        };
        assert_eq!(cert("AQID").unwrap(), [vec![1, 2, 3]]);
        assert_eq!(cert("AQ\n I\tD ").unwrap(), [vec![1, 2, 3]]);
        assert_eq!(cert("AQ==").unwrap(), [vec![1]]);
        assert_eq!(cert("AR==").unwrap(), [vec![1]]);
        for bad in ["AQ", "AQ=", "-_-_", "AQ\u{a0}ID"] {
            assert_eq!(cert(bad).unwrap_err(), "invalid base64 in a CERTIFICATE block", "{bad:?}");
        }
    }

    #[test]
    fn der_sequence_check() {
        assert!(single_sequence(&[0x30, 0x00]));
        assert!(single_sequence(&[0x30, 0x01, 0x05]));
        assert!(!single_sequence(&[0x30, 0x02, 0x05]));
        assert!(!single_sequence(&[0x30, 0x01, 0x05, 0x00]));
        assert!(!single_sequence(&[0x31, 0x00]));
        assert!(!single_sequence(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]), "non-minimal length");
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        assert!(single_sequence(&long));
        assert!(!single_sequence(&[0x30, 0x80]), "indefinite length");
        assert_eq!(PemError::IncorrectPassword.to_string(), "incorrect password");
    }

    /// The one loader reads each kind the same way for every caller, and says why not.
    #[test]
    fn one_loader_for_every_private_key() {
        use rustls_pki_types::PrivateKeyDer;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = key.serialize_der();
        let cert = rcgen::CertificateParams::new(vec!["c".into()]).unwrap().self_signed(&key);
        // Certificates before the key are skipped.
        let plain = format!("{}{}", cert.unwrap().pem(), key.serialize_pem());
        let got = load_private_key(plain.as_bytes(), None).unwrap();
        assert!(matches!(&got, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(got.secret_der(), pkcs8.as_slice());
        let enc = encrypt("PRIVATE KEY", &pkcs8, b"pw").unwrap();
        let got = load_private_key(enc.as_bytes(), Some(b"pw")).unwrap();
        assert_eq!(got.secret_der(), pkcs8.as_slice());
        // The label names the type back, for every type the loader gives.
        for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
            assert_eq!(key_label(&private_key_der(label, &pkcs8).unwrap()), label);
        }
        let sec1 = [0x30, 0x03, 0x02, 0x01, 0x01];
        let enc_sec1 = encrypt("EC PRIVATE KEY", &sec1, b"pw").unwrap();
        let got = load_private_key(enc_sec1.as_bytes(), Some(b"pw")).unwrap();
        assert!(matches!(got, PrivateKeyDer::Sec1(_)));

        let err = |pem: &[u8], pw: Option<&[u8]>| load_private_key(pem, pw).unwrap_err();
        assert_eq!(err(enc.as_bytes(), None), KeyError::PasswordRequired);
        assert_eq!(err(enc.as_bytes(), Some(b"")), KeyError::PasswordRequired);
        assert_eq!(
            err(enc.as_bytes(), Some(b"nope")),
            KeyError::Encrypted(PemError::IncorrectPassword)
        );
        assert_eq!(
            err(enc.as_bytes(), Some(b"nope")).to_string(),
            "private key is encrypted: incorrect password"
        );
        assert_eq!(err(b"nothing", None), KeyError::NotFound);
        assert_eq!(err(b"nothing", None).to_string(), "no PEM-encoded private key found");
        let p8 =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(err(p8, Some(b"pw")), KeyError::Pkcs8Encrypted);
        let bad = b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
        assert!(matches!(err(bad, None), KeyError::Invalid(_)), "{:?}", err(bad, None));
        assert!(!format!("{:?}", err(enc.as_bytes(), Some(b"nope"))).contains("nope"));
    }

    proptest::proptest! {
        /// Garbage, and garbage inside a well-formed encrypted block, never panics.
        #[test]
        fn garbage_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            blocks in 0usize..5,
        ) {
            let _ = is_encrypted(&data);
            let _ = is_pkcs8_encrypted(&data);
            let _ = decrypt(&data, b"pw");
            let n = (blocks * 16).min(data.len() / 16 * 16);
            let body = STANDARD.encode(&data[..n]);
            let pem = format!(
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,000102030405060708090a0b0c0d0e0f\n\n{body}\n-----END EC PRIVATE KEY-----\n"
            );
            proptest::prop_assert!(is_encrypted(pem.as_bytes()));
            let _ = decrypt(pem.as_bytes(), &data);
        }

        /// The format has no integrity check (CBC, no MAC): a flipped ciphertext bit is an
        /// error or, when the garbled DER still parses, a *different* key, which then fails
        /// the key-certificate match where keys are loaded. Never the original, never a panic.
        #[test]
        fn tampered_ciphertexts_never_give_the_original_key(byte in 0usize..128, bit in 0u8..8) {
            let der = unhex(FIXED_EC_KEY).unwrap();
            let pem = encrypt_with_iv("EC PRIVATE KEY", &der, b"pw", &[3; 16]);
            let mut key = parse(pem.as_bytes()).unwrap();
            let i = byte % key.ciphertext.len();
            key.ciphertext[i] ^= 1 << bit;
            if let Ok(got) = key.decrypt(b"pw") {
                proptest::prop_assert_ne!(got.as_slice(), der.as_slice());
            }
        }
    }
}
