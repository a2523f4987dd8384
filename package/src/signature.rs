//! Detached minisign signatures of package archives.
//!
//! Verification uses `minisign-verify` (small, pure Rust, no dependencies): it is what the device
//! links. Creating keys and signatures needs the `minisign` crate (scrypt, rpassword) and sits
//! behind the `sign` feature, for the host only.
//!
//! Signatures are in prehashed mode (BLAKE2b-512 of the file, then Ed25519), the default of
//! minisign ≥ 0.8, so a file is streamed, never held in memory, and stock `minisign -Vm FILE -p
//! trident.pub` verifies them. Legacy (non-prehashed) signatures are refused.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

#[cfg(feature = "sign")]
mod sign;
#[cfg(feature = "sign")]
pub use sign::{PUBLIC_KEY_FILE, SECRET_KEY_FILE, SigningKey, generate_keypair};

/// The largest signature file read (a real one is about 300 bytes).
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// A trusted minisign public key.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: minisign_verify::PublicKey,
    id: [u8; 8],
    base64: String,
    origin: String,
}

/// What a verified signature says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInfo {
    /// The signing key's id, as minisign prints it (16 upper-case hex digits).
    pub key_id: String,
    /// The signed comment (e.g. `timestamp:… file:…`): covered by the signature, so trustworthy.
    pub trusted_comment: String,
}

impl PublicKey {
    /// Loads a minisign public key file (`untrusted comment: …` then the base64 key line) or a
    /// file holding only the base64 line.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// A `--pubkey` value as both command lines take it: the path of a key file when one
    /// exists there, else the key itself (its base64 line).
    pub fn from_arg(value: &str) -> Result<Self> {
        let path = Path::new(value);
        if path.is_file() {
            Self::from_file(path)
        } else {
            Self::from_text(value, "--pubkey")
        }
    }

    /// Parses a public key from text; `origin` (a path, a flag, a variable name) names it in
    /// errors.
    pub fn from_text(text: &str, origin: &str) -> Result<Self> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let line = match lines.as_slice() {
            [comment, key, ..] if comment.starts_with("untrusted comment:") => *key,
            [key] => *key,
            _ => {
                return Err(Error::key(
                    origin,
                    "expected a minisign public key: an `untrusted comment:` line followed by \
                     the base64 key (starting `RW`), or the base64 key alone",
                ));
            }
        };
        let bytes = base64_decode(line).filter(|b| b.len() == 42 && b.starts_with(b"Ed"));
        let (Some(bytes), Ok(key)) = (bytes, minisign_verify::PublicKey::from_base64(line)) else {
            return Err(Error::key(
                origin,
                "is not a minisign Ed25519 public key (expected 56 base64 characters starting `RW`)",
            ));
        };
        Ok(PublicKey {
            key,
            id: key_id_bytes(&bytes),
            base64: line.to_string(),
            origin: origin.to_string(),
        })
    }

    /// The key id as minisign prints it (16 upper-case hex digits).
    pub fn key_id(&self) -> String {
        format_key_id(&self.id)
    }

    /// Where the key came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The base64 key line (`RW…`).
    pub fn to_base64(&self) -> &str {
        &self.base64
    }
}

/// Verifies that `signature` (a minisign signature file) is `key`'s signature of the file
/// `data`, streaming the file.
pub fn verify_file(data: &Path, signature: &Path, key: &PublicKey) -> Result<SignatureInfo> {
    let malformed = |why: &str| {
        Error::signature(
            signature,
            format!(
                "not a minisign signature ({why}); expected four lines: `untrusted comment: …`, \
                 the base64 signature, `trusted comment: …`, the base64 global signature"
            ),
        )
    };
    let meta = std::fs::metadata(signature).map_err(|e| Error::io("cannot read", signature, e))?;
    if meta.len() > MAX_SIGNATURE_BYTES {
        return Err(malformed("over 64 KiB"));
    }
    let bytes = std::fs::read(signature).map_err(|e| Error::io("cannot read", signature, e))?;
    let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text"))?;
    let sig_line = text.lines().nth(1).unwrap_or_default().trim();
    let sig_bytes = base64_decode(sig_line)
        .filter(|b| b.len() == 74)
        .ok_or_else(|| malformed("the second line is not a base64 signature"))?;
    match &sig_bytes[..2] {
        b"ED" => {}
        b"Ed" => {
            return Err(Error::signature(
                signature,
                "is a legacy (non-prehashed) minisign signature; sign again with trident or \
                 minisign ≥ 0.8",
            ));
        }
        _ => return Err(malformed("unknown signature algorithm")),
    }
    let decoded =
        minisign_verify::Signature::decode(&text).map_err(|e| malformed(&e.to_string()))?;
    let signed_by = format_key_id(&key_id_bytes(&sig_bytes));
    if signed_by != key.key_id() {
        return Err(Error::signature(
            signature,
            format!(
                "was made with key {signed_by}, but the trusted public key ({}) is {}",
                key.origin,
                key.key_id()
            ),
        ));
    }
    let mut verifier = key
        .key
        .verify_stream(&decoded)
        .map_err(|e| malformed(&e.to_string()))?;
    let mut file = std::fs::File::open(data).map_err(|e| Error::io("cannot read", data, e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", data, e))?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
    }
    verifier.finalize().map_err(|_| {
        Error::signature(
            data,
            format!(
                "does not match its signature {}: the file was changed after signing, or the \
                 signature is for another file",
                signature.display()
            ),
        )
    })?;
    Ok(SignatureInfo {
        key_id: signed_by,
        trusted_comment: decoded.trusted_comment().to_string(),
    })
}

/// Bytes 2..10 of a key or signature: the key id, stored little-endian.
fn key_id_bytes(bytes: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[2..10]);
    id
}

/// minisign prints the id as a little-endian u64 in upper-case hex.
fn format_key_id(id: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*id))
}

/// Standard base64 with optional padding; `None` for anything else. (minisign-verify keeps its
/// decoder private, and the key id is needed to name keys in errors.) Errors never echo the
/// input: for a secret key, that would be the key.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let body = text
        .strip_suffix("==")
        .or_else(|| text.strip_suffix('='))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single character left over cannot encode a byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_key_ids_read_like_minisign() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a").is_none() && base64_decode("a*bc").is_none());
        // minisign-verify's documentation key; minisign prints its id as E7620F1842B4E81F.
        let k = PublicKey::from_text(
            "untrusted comment: minisign public key E7620F1842B4E81F\n\
             RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n",
            "test",
        )
        .unwrap();
        assert_eq!(k.key_id(), "E7620F1842B4E81F");
        let bare = PublicKey::from_text(
            "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
            "t",
        )
        .unwrap();
        assert_eq!(bare.key_id(), k.key_id());
        let e = PublicKey::from_text("untrusted comment: x\nnot a key", "keys/x.pub")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("keys/x.pub: ") && e.contains("RW"), "{e}");
    }
}
