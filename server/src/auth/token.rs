//! Bearer tokens and their salted hashes. Only hashes are stored; a token is shown once, when
//! `myelin token new` makes it.
//!
//! Why SHA-256 and not a password hash (argon2, bcrypt): tokens are 256 random bits, not
//! passwords, so no dictionary can be run against a leaked hash and a deliberately slow hash
//! would only slow every call down. The salt keeps equal tokens from having equal hashes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this, so that a leaked one is recognisable (secret scanners) and a
/// hash or a file path given by mistake is told apart.
pub const TOKEN_PREFIX: &str = "myelin_";

const SCHEME: &str = "sha256";

/// A salted SHA-256 of a token: `sha256:<16-byte salt, hex>:<digest, hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash {
    salt: [u8; 16],
    digest: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token hash is `{SCHEME}:<32 hex digits of salt>:<64 hex digits of digest>` (as `myelin token new` prints it)")]
    Malformed,
    #[error("the system's random number generator failed")]
    Random(#[source] getrandom::Error),
}

/// A new token: the prefix and 256 random bits in hex.
pub fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

impl TokenHash {
    /// The hash of `token` with a fresh random salt.
    pub fn of(token: &str) -> Result<Self, TokenError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(TokenError::Random)?;
        Ok(Self { salt, digest: digest(&salt, token) })
    }

    /// Whether `token` is the one hashed, in time that does not depend on where they differ.
    pub fn matches(&self, token: &str) -> bool {
        digest(&self.salt, token).ct_eq(&self.digest).into()
    }
}

fn digest(salt: &[u8; 16], token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

impl FromStr for TokenHash {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.trim().split(':');
        let (Some(SCHEME), Some(salt), Some(digest), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let mut hash = Self { salt: [0; 16], digest: [0; 32] };
        hex::decode_to_slice(salt, &mut hash.salt).map_err(|_| TokenError::Malformed)?;
        hex::decode_to_slice(digest, &mut hash.digest).map_err(|_| TokenError::Malformed)?;
        Ok(hash)
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}:{}:{}", hex::encode(self.salt), hex::encode(self.digest))
    }
}

/// Never the digest in logs.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_token_only() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        let hash = TokenHash::of(&token).unwrap();
        assert!(hash.matches(&token));
        assert!(!hash.matches(&token[..token.len() - 1]));
        assert!(!hash.matches(""));
        let parsed: TokenHash = hash.to_string().parse().unwrap();
        assert!(parsed == hash && parsed.matches(&token));
        // Salted: the same token hashes differently each time.
        assert_ne!(TokenHash::of(&token).unwrap().to_string(), hash.to_string());
    }

    #[test]
    fn the_format_is_what_a_script_can_compute() {
        // sha256(salt || token), as `hashlib.sha256(bytes.fromhex(salt) + token.encode())` does.
        let salt = "00112233445566778899aabbccddeeff";
        let digest = hex::encode(super::digest(&hex::decode(salt).unwrap().try_into().unwrap(), "myelin_x"));
        let hash: TokenHash = format!("sha256:{salt}:{digest}").parse().unwrap();
        assert!(hash.matches("myelin_x"));
        for bad in ["", "sha256:00:11", "md5:00112233445566778899aabbccddeeff:00", &format!("sha256:{salt}:{digest}:x"), "myelin_abc"] {
            assert!(bad.parse::<TokenHash>().is_err(), "{bad}");
        }
    }
}
