//! How to reach and use a ScyllaDB cluster: [`ScyllaConfig`] and the small
//! value types it is made of, with parsers for their command-line forms.
//!
//! Everything here is validated before it reaches CQL: the keyspace name and
//! the replication map are the only configuration that is ever written into
//! statement text (DDL cannot take bind markers), so both are checked
//! against strict grammars.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};
use thiserror::Error;

/// Default keyspace name.
pub const DEFAULT_KEYSPACE: &str = "parley";
/// Default client-side request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default connection (handshake) timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The keyspace name is not a plain CQL identifier.
    #[error("invalid keyspace name {0:?}: use 1-48 characters of a-z, 0-9 and _, starting with a letter")]
    Keyspace(String),
    /// The replication setting does not parse.
    #[error("invalid replication {0:?}: use `simple:RF` or `network:DC=RF[,DC=RF...]`")]
    Replication(String),
    /// A consistency level name is unknown or not allowed here.
    #[error("invalid consistency {0:?}")]
    Consistency(String),
    /// A contact point is not `host:port` (or a plain host).
    #[error("invalid contact point {0:?}: use host:port")]
    ContactPoint(String),
    /// No contact point was given.
    #[error("no ScyllaDB contact points given (--scylla-nodes host:port,...)")]
    NoContactPoints,
    /// A username was given without a password, or the other way round.
    #[error("ScyllaDB credentials need both a username and a password")]
    Credentials,
    /// A tablets setting is not `auto`, `enabled` or `disabled`.
    #[error("invalid tablets setting {0:?}: use auto, enabled or disabled")]
    Tablets(String),
}

/// Keyspace replication, rendered into `CREATE KEYSPACE` at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor: for a one-node or
    /// single-rack development cluster only.
    Simple {
        /// Copies of each partition.
        replication_factor: u32,
    },
    /// `NetworkTopologyStrategy` with a factor per datacenter: production.
    NetworkTopology {
        /// `(datacenter, replication factor)` pairs, in the given order.
        datacenters: Vec<(String, u32)>,
    },
}

impl Default for Replication {
    fn default() -> Self {
        Replication::Simple {
            replication_factor: 1,
        }
    }
}

impl Replication {
    /// The CQL map literal for `WITH replication = ...`.
    pub fn to_cql_map(&self) -> String {
        match self {
            Replication::Simple { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Replication::NetworkTopology { datacenters } => {
                let mut out = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, rf) in datacenters {
                    // Datacenter names were validated: no quote can occur.
                    out.push_str(&format!(", '{dc}': {rf}"));
                }
                out.push('}');
                out
            }
        }
    }
}

impl FromStr for Replication {
    type Err = ConfigError;

    /// Parses `simple:RF` (also `SimpleStrategy:RF`) or
    /// `network:DC=RF,DC=RF` (also `NetworkTopologyStrategy:...`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Replication(s.to_owned());
        let (class, rest) = s.trim().split_once(':').ok_or_else(bad)?;
        let rf = |v: &str| -> Result<u32, ConfigError> {
            match v.trim().parse::<u32>() {
                Ok(n) if (1..=32).contains(&n) => Ok(n),
                _ => Err(bad()),
            }
        };
        match class.trim().to_ascii_lowercase().as_str() {
            "simple" | "simplestrategy" => Ok(Replication::Simple {
                replication_factor: rf(rest)?,
            }),
            "network" | "networktopologystrategy" | "nts" => {
                let mut datacenters = Vec::new();
                for part in rest.split(',') {
                    let (dc, n) = part.split_once('=').ok_or_else(bad)?;
                    let dc = dc.trim();
                    if !valid_datacenter(dc) || datacenters.iter().any(|(d, _)| d == dc) {
                        return Err(bad());
                    }
                    datacenters.push((dc.to_owned(), rf(n)?));
                }
                Ok(Replication::NetworkTopology { datacenters })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replication::Simple { replication_factor } => write!(f, "simple:{replication_factor}"),
            Replication::NetworkTopology { datacenters } => {
                let parts: Vec<String> = datacenters
                    .iter()
                    .map(|(dc, rf)| format!("{dc}={rf}"))
                    .collect();
                write!(f, "network:{}", parts.join(","))
            }
        }
    }
}

/// Whether the keyspace is created with ScyllaDB tablets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tablets {
    /// Say nothing: the server's default applies.
    #[default]
    Auto,
    /// `AND tablets = {'enabled': true}`.
    Enabled,
    /// `AND tablets = {'enabled': false}` (vnodes): for ScyllaDB versions
    /// whose tablet keyspaces do not support lightweight transactions.
    Disabled,
}

impl FromStr for Tablets {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Tablets::Auto),
            "enabled" | "on" | "true" => Ok(Tablets::Enabled),
            "disabled" | "off" | "false" => Ok(Tablets::Disabled),
            _ => Err(ConfigError::Tablets(s.to_owned())),
        }
    }
}

/// TLS to the cluster. Needs the `scylla-tls` cargo feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) the nodes' certificates chain
    /// to. Node certificates must name the node's IP address (the driver
    /// connects by address).
    pub ca_file: PathBuf,
}

/// Everything [`ScyllaStore::connect`](super::ScyllaStore::connect) needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (port 9042 when omitted).
    pub nodes: Vec<String>,
    /// Keyspace; created when missing.
    pub keyspace: String,
    /// Replication used when the keyspace is created (an existing
    /// keyspace is never altered).
    pub replication: Replication,
    /// Tablets choice used when the keyspace is created.
    pub tablets: Tablets,
    /// Consistency of reads and plain writes (and of the commit phase of
    /// lightweight transactions).
    pub consistency: Consistency,
    /// Consistency of the Paxos phase of lightweight transactions and of
    /// linearizable reads.
    pub serial_consistency: SerialConsistency,
    /// Client-side timeout of one request (all its retries included).
    pub request_timeout: Duration,
    /// Timeout of opening one connection.
    pub connect_timeout: Duration,
    /// Preferred (local) datacenter for load balancing; required in
    /// practice with `LOCAL_*` consistency in a multi-datacenter cluster.
    pub local_datacenter: Option<String>,
    /// Username for password authentication.
    pub username: Option<String>,
    /// Password for password authentication.
    pub password: Option<String>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<TlsOptions>,
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("tablets", &self.tablets)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("local_datacenter", &self.local_datacenter)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ScyllaConfig {
    /// A configuration with the defaults (keyspace `parley`, SimpleStrategy
    /// RF 1, QUORUM, SERIAL, 5 s timeouts, no auth, no TLS) for the given
    /// contact points. In one datacenter QUORUM and SERIAL reach the same
    /// replicas as their `LOCAL_*` forms; across datacenters only they keep
    /// the split-owner rule and deduplication (see `--scylla-consistency`).
    pub fn new(nodes: Vec<String>) -> Self {
        ScyllaConfig {
            nodes,
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            replication: Replication::default(),
            tablets: Tablets::Auto,
            consistency: Consistency::Quorum,
            serial_consistency: SerialConsistency::Serial,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            local_datacenter: None,
            username: None,
            password: None,
            tls: None,
        }
    }

    /// Checks every field that ends up in CQL text or decides how to
    /// connect; returns the contact points with default ports filled in.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        if !valid_keyspace(&self.keyspace) {
            return Err(ConfigError::Keyspace(self.keyspace.clone()));
        }
        if let Replication::NetworkTopology { datacenters } = &self.replication {
            if datacenters.is_empty() || datacenters.iter().any(|(dc, _)| !valid_datacenter(dc)) {
                return Err(ConfigError::Replication(self.replication.to_string()));
            }
        }
        if matches!(
            self.consistency,
            Consistency::Serial | Consistency::LocalSerial | Consistency::Any
        ) {
            return Err(ConfigError::Consistency(format!("{:?}", self.consistency)));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::Credentials);
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(normalize_contact_point)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(ConfigError::NoContactPoints);
        }
        Ok(nodes)
    }
}

/// Parses a read/write consistency level name (`local_quorum`, `quorum`,
/// `one`, `local_one`, `two`, `three`, `all`, `each_quorum`), any case,
/// `-` or `_`.
pub fn parse_consistency(s: &str) -> Result<Consistency, ConfigError> {
    match normalize_name(s).as_str() {
        "localquorum" => Ok(Consistency::LocalQuorum),
        "quorum" => Ok(Consistency::Quorum),
        "one" => Ok(Consistency::One),
        "localone" => Ok(Consistency::LocalOne),
        "two" => Ok(Consistency::Two),
        "three" => Ok(Consistency::Three),
        "all" => Ok(Consistency::All),
        "eachquorum" => Ok(Consistency::EachQuorum),
        _ => Err(ConfigError::Consistency(s.to_owned())),
    }
}

/// Parses a serial consistency level name (`local_serial` or `serial`).
pub fn parse_serial_consistency(s: &str) -> Result<SerialConsistency, ConfigError> {
    match normalize_name(s).as_str() {
        "localserial" => Ok(SerialConsistency::LocalSerial),
        "serial" => Ok(SerialConsistency::Serial),
        _ => Err(ConfigError::Consistency(s.to_owned())),
    }
}

fn normalize_name(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A keyspace name this backend accepts: lowercase, so it never needs
/// quoting (`[a-z][a-z0-9_]{0,47}`).
pub fn valid_keyspace(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A datacenter name that can be put between single quotes safely.
fn valid_datacenter(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `host` -> `host:9042`; `host:port` and `[v6]:port` are checked.
fn normalize_contact_point(node: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::ContactPoint(node.to_owned());
    if node.contains(char::is_whitespace) || node.contains('/') {
        return Err(bad());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (_, port) = rest.split_once("]:").ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        return Ok(node.to_owned());
    }
    match node.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            port.parse::<u16>().map_err(|_| bad())?;
            Ok(node.to_owned())
        }
        Some(_) => Err(bad()),
        None => Ok(format!("{node}:9042")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_parses_and_renders() {
        let simple: Replication = "simple:1".parse().expect("simple");
        assert_eq!(
            simple.to_cql_map(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        let nts: Replication = "network:dc1=3,eu-west.2=2".parse().expect("nts");
        assert_eq!(
            nts.to_cql_map(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'eu-west.2': 2}"
        );
        assert_eq!(nts.to_string(), "network:dc1=3,eu-west.2=2");
        assert_eq!(
            "NetworkTopologyStrategy: dc1 = 3".parse::<Replication>(),
            Ok(Replication::NetworkTopology {
                datacenters: vec![("dc1".into(), 3)]
            })
        );
        for bad in [
            "",
            "simple",
            "simple:0",
            "simple:x",
            "network:",
            "network:dc1",
            "network:dc'1=3",
            "network:dc1=3,dc1=2",
            "other:1",
            "network:dc1=3}; DROP KEYSPACE parley; --=1",
        ] {
            assert!(
                bad.parse::<Replication>().is_err(),
                "{bad:?} must not parse"
            );
        }
    }

    #[test]
    fn consistency_names() {
        assert_eq!(
            parse_consistency("LOCAL_QUORUM"),
            Ok(Consistency::LocalQuorum)
        );
        assert_eq!(parse_consistency("local-one"), Ok(Consistency::LocalOne));
        assert_eq!(parse_consistency("quorum"), Ok(Consistency::Quorum));
        assert!(parse_consistency("serial").is_err());
        assert!(parse_consistency("any").is_err());
        assert_eq!(
            parse_serial_consistency("LOCAL_SERIAL"),
            Ok(SerialConsistency::LocalSerial)
        );
        assert_eq!(
            parse_serial_consistency("serial"),
            Ok(SerialConsistency::Serial)
        );
        assert!(parse_serial_consistency("quorum").is_err());
    }

    #[test]
    fn keyspace_names() {
        for ok in ["parley", "parley_test", "p1", &"a".repeat(48)] {
            assert!(valid_keyspace(ok), "{ok}");
        }
        for bad in [
            "",
            "Parley",
            "1parley",
            "_p",
            "parley-test",
            "p;drop",
            "p\"q",
            &"a".repeat(49),
        ] {
            assert!(!valid_keyspace(bad), "{bad}");
        }
    }

    #[test]
    fn validate_fills_ports_and_checks_fields() {
        let mut c = ScyllaConfig::new(vec![
            "scylla:9042".into(),
            " 10.0.0.2 ".into(),
            "[::1]:19042".into(),
        ]);
        assert_eq!(
            c.validate(),
            Ok(vec![
                "scylla:9042".to_string(),
                "10.0.0.2:9042".to_string(),
                "[::1]:19042".to_string()
            ])
        );
        c.username = Some("u".into());
        assert_eq!(c.validate(), Err(ConfigError::Credentials));
        c.password = Some("p".into());
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("\"p\""), "password redacted");
        c.keyspace = "Bad".into();
        assert!(matches!(c.validate(), Err(ConfigError::Keyspace(_))));
        let mut c = ScyllaConfig::new(vec![]);
        assert_eq!(c.validate(), Err(ConfigError::NoContactPoints));
        c.nodes = vec!["host:port".into()];
        assert!(matches!(c.validate(), Err(ConfigError::ContactPoint(_))));
        c.nodes = vec!["a:1:2".into()];
        assert!(matches!(c.validate(), Err(ConfigError::ContactPoint(_))));
        let mut c = ScyllaConfig::new(vec!["h".into()]);
        c.consistency = Consistency::LocalSerial;
        assert!(matches!(c.validate(), Err(ConfigError::Consistency(_))));
    }

    #[test]
    fn tablets_setting() {
        assert_eq!("auto".parse(), Ok(Tablets::Auto));
        assert_eq!("Disabled".parse(), Ok(Tablets::Disabled));
        assert_eq!("on".parse(), Ok(Tablets::Enabled));
        assert!("maybe".parse::<Tablets>().is_err());
    }
}
