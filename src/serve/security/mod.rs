//! Who may connect and how the connection is protected, for both listeners:
//! password authentication (SCRAM-SHA-256 on pgwire, HTTP basic auth, one
//! users file for both), TLS (pgwire `SSLRequest` and HTTPS), and the rule
//! that a listener reachable from other machines needs authentication.

pub mod tls;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::ServerConfig;
use tls::Tls;
use users::Users;

/// The security settings both listeners share, loaded once at start-up so a
/// bad users file or certificate stops the server before it listens.
#[derive(Debug, Default, Clone)]
pub struct Security {
    /// `None`: anyone may connect (only allowed on loopback, or with
    /// `--allow-unauthenticated`).
    pub users: Option<Arc<Users>>,
    pub tls: Option<Tls>,
    allow_unauthenticated: bool,
}

impl Security {
    pub fn from_config(config: &ServerConfig) -> anyhow::Result<Security> {
        let users = match &config.users_file {
            Some(path) => Some(Arc::new(Users::load(path)?)),
            None => None,
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Security {
            users,
            tls,
            allow_unauthenticated: config.allow_unauthenticated,
        })
    }

    /// Refuses to serve `listener` on `addr` to other machines without
    /// authentication: a server that anyone on the network can query, and
    /// whose files and queries anyone can change, must be asked for.
    pub fn check_exposure(&self, listener: &str, addr: SocketAddr) -> anyhow::Result<()> {
        if self.users.is_some() || self.allow_unauthenticated || addr.ip().is_loopback() {
            return Ok(());
        }
        anyhow::bail!(
            "refusing to serve {listener} on {addr} without authentication: \
             give --users-file FILE (see `sluice hash-password`), bind a loopback \
             address, or pass --allow-unauthenticated to let anyone who can reach it in"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listeners_may_go_without_authentication() {
        let open = Security::default();
        assert!(open
            .check_exposure("pgwire", "127.0.0.1:5433".parse().unwrap())
            .is_ok());
        assert!(open
            .check_exposure("pgwire", "[::1]:5433".parse().unwrap())
            .is_ok());
        let err = open
            .check_exposure("HTTP", "0.0.0.0:8088".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--users-file"), "{err}");
        let allowed = Security {
            allow_unauthenticated: true,
            ..Security::default()
        };
        assert!(allowed
            .check_exposure("HTTP", "0.0.0.0:8088".parse().unwrap())
            .is_ok());
        let with_users = Security {
            users: Some(Arc::new(Users::parse("ann:pw").unwrap())),
            ..Security::default()
        };
        assert!(with_users
            .check_exposure("HTTP", "10.1.2.3:8088".parse().unwrap())
            .is_ok());
    }
}
