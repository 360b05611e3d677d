//! A connection as the running gateway sees it (after config validation and `${ENV}`
//! expansion). Holds the target's credential: never logged, never recorded.
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    Mysql,
    Http,
    Kubernetes,
    /// The MCP front door (`/mcp`): how an agent reached Warden, never a connection's
    /// protocol (`parse` does not accept it).
    Mcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Http => "http",
            Protocol::Kubernetes => "kubernetes",
            Protocol::Mcp => "mcp",
        }
    }
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "postgres" | "postgresql" => Some(Protocol::Postgres),
            "mysql" | "mariadb" => Some(Protocol::Mysql),
            "http" => Some(Protocol::Http),
            "kubernetes" => Some(Protocol::Kubernetes),
            _ => None,
        }
    }
}

/// TLS from Warden to the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UpstreamTls {
    /// Plain TCP (fine on loopback or a private link).
    #[default]
    Disable,
    /// TLS, certificate verified against `ca_file` (or the system roots) and the host name.
    VerifyFull {
        ca_file: Option<PathBuf>,
        server_name: Option<String>,
    },
}

#[derive(Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub protocol: Protocol,
    /// `host:port` for databases, a URL for HTTP.
    pub upstream: String,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: UpstreamTls,
    pub headers: Vec<(String, String)>,
    /// One line for people and agents (`list_connections`); from `description` in the config.
    pub description: Option<String>,
}

impl fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("upstream", &self.upstream)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("description", &self.description)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}
