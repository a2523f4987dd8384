//! Keys and signatures (feature `sign`, host only).
//!
//! Signatures are hedged: minisign mixes fresh random noise into every Ed25519 signature, so
//! signing the same (byte-identical) package twice gives two different, equally valid signature
//! files. Reproducibility is a property of the archive, compared by its SHA-256, not of the
//! signature.
//!
//! The `minisign` crate prompts on the terminal when a password is needed and none is given;
//! this module never lets it: encryption is checked first and a missing password is an error.
//! No error message or `Debug` output carries key material (the crate's own `SecretKey` `Debug`
//! prints the key, so it is never formatted here).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{PublicKey, base64_decode};
use crate::error::{Error, Result};

/// File name of a generated secret key.
pub const SECRET_KEY_FILE: &str = "trident.key";
/// File name of a generated public key.
pub const PUBLIC_KEY_FILE: &str = "trident.pub";

/// Length of a decoded minisign secret key line.
const SECRET_KEY_BYTES: usize = 158;

/// A minisign secret key, decrypted and ready to sign.
pub struct SigningKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
    origin: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a minisign secret key file; `password` is needed when the key is encrypted.
    pub fn from_file(path: &Path, password: Option<String>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::parse(&text, &path.display().to_string(), password, "")
    }

    /// Loads the secret key from the environment variable `var`, which holds the whole key file
    /// (both lines). When the key is encrypted its password is read from `password_var`.
    /// Errors name the variables, never their content.
    pub fn from_env(var: &str, password_var: &str) -> Result<Self> {
        let origin = format!("environment variable {var}");
        let text = match std::env::var(var) {
            Ok(t) => t,
            Err(std::env::VarError::NotPresent) => {
                return Err(Error::key(
                    origin,
                    format!(
                        "is not set; it must hold the whole secret key file (the text of {SECRET_KEY_FILE})"
                    ),
                ));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::key(origin, "is not UTF-8 text"));
            }
        };
        let password = match std::env::var(password_var) {
            Ok(p) => Some(p),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::key(
                    format!("environment variable {password_var}"),
                    "is not UTF-8 text",
                ));
            }
        };
        Self::parse(
            &text,
            &origin,
            password,
            &format!(": set environment variable {password_var} to its password"),
        )
    }

    /// `no_password` ends the error for an encrypted key without a password (a hint or empty).
    fn parse(
        text: &str,
        origin: &str,
        password: Option<String>,
        no_password: &str,
    ) -> Result<Self> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let [comment, line, ..] = lines.as_slice() else {
            return Err(Error::key(
                origin,
                "expected a minisign secret key: an `untrusted comment:` line, then the base64 key",
            ));
        };
        if !comment.starts_with("untrusted comment:") {
            return Err(Error::key(
                origin,
                "expected a minisign secret key: the first line must be `untrusted comment: …`",
            ));
        }
        let bytes = base64_decode(line)
            .filter(|b| b.len() == SECRET_KEY_BYTES && b.starts_with(b"Ed"))
            .ok_or_else(|| {
                Error::key(origin, "the key line is not a minisign Ed25519 secret key")
            })?;
        let raw = minisign::SecretKey::from_bytes(&bytes)
            .map_err(|_| Error::key(origin, "the key line is not a minisign secret key"))?;
        let secret = if raw.is_encrypted() {
            // Checked before asking minisign, which would prompt on the terminal without one.
            let Some(password) = password else {
                return Err(Error::key(
                    origin,
                    format!("the secret key is encrypted and no password was given{no_password}"),
                ));
            };
            // The box handed to minisign holds only the key line: no comment text travels on.
            let boxed =
                minisign::SecretKeyBox::from_string(&format!("untrusted comment: key\n{line}\n"))
                    .map_err(|e| Error::key(origin, format!("cannot read the key: {e}")))?;
            minisign::SecretKey::from_box(boxed, Some(password)).map_err(|e| {
                let text = e.to_string();
                if text.contains("Wrong password") {
                    Error::key(origin, "wrong password for this secret key")
                } else {
                    Error::key(origin, format!("cannot decrypt the key: {text}"))
                }
            })?
        } else {
            // Not through `from_unencrypted_box`: stock `minisign -G -W` leaves the checksum of
            // an unencrypted key zero, which the crate reads as corruption. The self-test below
            // catches a damaged key instead.
            raw
        };
        let public = minisign::PublicKey::from_secret_key(&secret)
            .map_err(|e| Error::key(origin, format!("cannot derive the public key: {e}")))?;
        // Sign a few bytes and check the result with the key's own public half.
        minisign::sign(
            Some(&public),
            &secret,
            &b"trident key check"[..],
            Some("check"),
            None,
        )
        .map_err(|_| {
            Error::key(
                origin,
                "the key is damaged: it does not sign for its own public key",
            )
        })?;
        Ok(SigningKey {
            secret,
            public,
            origin: origin.to_string(),
        })
    }

    /// The key id as minisign prints it.
    pub fn key_id(&self) -> String {
        let mut id = [0u8; 8];
        id.copy_from_slice(self.public.keynum());
        format!("{:016X}", u64::from_le_bytes(id))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_text(
            &self.public.to_base64(),
            &format!("public half of {}", self.origin),
        )
        .expect("minisign writes valid public keys")
    }

    /// The matching public key file's text (`untrusted comment: …` and the key line).
    pub fn public_key_file_text(&self) -> String {
        public_key_text(&self.public)
    }

    /// Writes `sig_out`, a minisign signature of the file `data` (prehashed) with the signed
    /// comment `trusted_comment` (one line). The signature file is written atomically. Stock
    /// `minisign -Vm DATA -x SIG_OUT -p trident.pub` verifies it.
    pub fn sign_file(&self, data: &Path, sig_out: &Path, trusted_comment: &str) -> Result<()> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(Error::invalid(
                "trusted comment",
                "must be one line (minisign stores it as one)",
            ));
        }
        let file = std::fs::File::open(data).map_err(|e| Error::io("cannot read", data, e))?;
        let signature = minisign::sign(
            Some(&self.public),
            &self.secret,
            std::io::BufReader::new(file),
            Some(trusted_comment),
            Some(&format!(
                "signature from trident secret key {}",
                self.key_id()
            )),
        )
        .map_err(|e| Error::signature(data, format!("cannot sign: {e}")))?;
        trident_core::fsutil::write_atomic(sig_out, signature.into_string().as_bytes())?;
        tracing::info!(file = %data.display(), signature = %sig_out.display(), key = %self.key_id(), "signed");
        Ok(())
    }
}

fn public_key_text(public: &minisign::PublicKey) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(public.keynum());
    format!(
        "untrusted comment: minisign public key {:016X}\n{}\n",
        u64::from_le_bytes(id),
        public.to_base64()
    )
}

/// Creates a new key pair in `dir`: [`SECRET_KEY_FILE`] (mode 0600; encrypted with `password`
/// when given, else unencrypted) and [`PUBLIC_KEY_FILE`]. Refuses to overwrite either file.
/// Returns (secret key path, public key path).
pub fn generate_keypair(dir: &Path, password: Option<String>) -> Result<(PathBuf, PathBuf)> {
    let secret_path = dir.join(SECRET_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    if password.as_deref() == Some("") {
        return Err(Error::key(
            secret_path.display().to_string(),
            "an empty password protects nothing; give a password or none for an unencrypted key",
        ));
    }
    for p in [&secret_path, &public_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::invalid(
                p.display().to_string(),
                "already exists; refusing to overwrite a key (move it away first)",
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    let origin = secret_path.display().to_string();
    let pair = match password {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| Error::key(&origin, format!("cannot generate a key pair: {e}")))?;
    let secret_text = pair
        .sk
        .to_box(Some("trident signing key (minisign format)"))
        .map_err(|e| Error::key(&origin, format!("cannot encode the key: {e}")))?
        .into_string();
    write_new(&secret_path, secret_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public_path, public_key_text(&pair.pk).as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    Ok((secret_path, public_path))
}

/// Writes a new file through a temporary sibling and a no-clobber rename: complete or absent,
/// and never replacing an existing file.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder
        .prefix(".trident-key.")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create temporary file in", parent, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write", path, e))?;
    tmp.persist_noclobber(path)
        .map_err(|e| Error::io("cannot write", path, e.error))?;
    Ok(())
}
