//! Who may connect: user names with SCRAM-SHA-256 verifiers, read from a users
//! file. A verifier is what Postgres keeps in `pg_authid.rolpassword`
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), so the server
//! never holds a password, a verifier can be copied from a Postgres server, and
//! `sluice hash-password` makes one.
//!
//! The file has one `name:secret` per line (blanks around either are ignored);
//! `#` starts a comment line. The secret is
//! a verifier or, for convenience, a plain password, hashed when the file is
//! read (the file then holds the password itself; prefer verifiers).

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, SCRAM_ITERATIONS};

const PREFIX: &str = "SCRAM-SHA-256$";

/// A SCRAM-SHA-256 verifier: enough to check a password or a SCRAM proof,
/// not enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: usize,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Self::derive(password, &salt, SCRAM_ITERATIONS)
    }

    fn derive(password: &str, salt: &[u8], iterations: usize) -> Verifier {
        let salted = gen_salted_password(password, salt, iterations);
        match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, iterations) {
            ScramSecret::Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            } => Verifier {
                iterations,
                salt,
                stored_key,
                server_key,
            },
            // pgwire's constructor always returns a verifier.
            ScramSecret::SaltedPassword { .. } => unreachable!("a verifier was derived"),
        }
    }

    /// Parses Postgres' text form of a verifier.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || format!("not a {PREFIX}<iterations>:<salt>$<StoredKey>:<ServerKey> verifier");
        let rest = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| STANDARD.decode(s).map_err(|e| format!("{}: {e}", bad()));
        let iterations: usize = iterations.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err(bad());
        }
        Ok(Verifier {
            iterations,
            salt: decode(salt)?,
            stored_key: decode(stored_key)?,
            server_key: decode(server_key)?,
        })
    }

    /// Whether `password` is the one this verifier was made from. Costs the
    /// verifier's iterations of PBKDF2, which is the point.
    pub fn matches(&self, password: &str) -> bool {
        let other = Self::derive(password, &self.salt, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }

    /// What pgwire's SCRAM exchange checks proofs against.
    pub fn scram_secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// Compares without stopping at the first difference, so the time taken does
/// not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users that may connect.
#[derive(Debug)]
pub struct Users {
    by_name: HashMap<String, Verifier>,
    /// For unknown names: a proof is checked against it, and fails, the same
    /// way as for a wrong password, so a client cannot tell names apart.
    decoy: Verifier,
}

impl Users {
    pub fn load(path: &Path) -> anyhow::Result<Users> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("users file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, secret) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected name:secret", n + 1))?;
            let (name, secret) = (name.trim(), secret.trim());
            if name.is_empty() {
                return Err(format!("line {}: the user name is empty", n + 1));
            }
            let verifier = if secret.starts_with(PREFIX) {
                Verifier::parse(secret).map_err(|e| format!("line {}: {e}", n + 1))?
            } else if secret.is_empty() {
                return Err(format!("line {}: user '{name}' has no password", n + 1));
            } else {
                Verifier::new(secret)
            };
            if by_name.insert(name.to_string(), verifier).is_some() {
                return Err(format!("line {}: user '{name}' appears twice", n + 1));
            }
        }
        if by_name.is_empty() {
            return Err("no users (one name:secret per line)".into());
        }
        Ok(Users {
            by_name,
            decoy: Verifier::new(&format!("{:x}", rand::random::<u128>())),
        })
    }

    /// The verifier to run a SCRAM exchange against: the user's, or a decoy
    /// that no proof matches.
    pub fn scram_secret(&self, name: &str) -> ScramSecret {
        self.by_name.get(name).unwrap_or(&self.decoy).scram_secret()
    }

    /// Whether `name` with `password` may connect (HTTP basic auth).
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        match self.by_name.get(name) {
            Some(v) => v.matches(password),
            None => {
                // Spend the same time as for a known name.
                self.decoy.matches(password);
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_and_round_trips_as_text() {
        let v = Verifier::new("s3cret");
        assert!(v.matches("s3cret"));
        assert!(!v.matches("s3cret "));
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text).unwrap(), v);
        assert!(Verifier::parse("SCRAM-SHA-256$4096:abc").is_err());
        assert!(Verifier::parse("md5abcdef").is_err());
    }

    #[test]
    fn the_users_file_takes_verifiers_and_plain_passwords() {
        let ann = Verifier::new("ann-pw");
        let users = Users::parse(&format!("# team\nann:{ann}\n\n bob : bob-pw\n",)).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check_password("ann", "ann-pw"));
        assert!(!users.check_password("ann", "bob-pw"));
        assert!(users.check_password("bob", "bob-pw"));
        assert!(!users.check_password("eve", "ann-pw"));
        assert!(Users::parse("").is_err());
        assert!(Users::parse("ann\n").is_err());
        assert!(Users::parse("ann:x\nann:y\n").is_err());
        assert!(Users::parse("ann:\n").is_err());
    }
}
