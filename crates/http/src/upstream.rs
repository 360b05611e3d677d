//! Upstreams: the URL of each `protocol = "http"` connection and its connection pool
//! (plain HTTP, or HTTPS verified against the system roots or the connection's
//! `ca_file`; see [`crate::pool`] for how connections are driven).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use warden_pipeline::{ConnectionSpec, Protocol, UpstreamTls};

use crate::body::ProxyBody;
use crate::pool::{Pool, UpstreamBody, UpstreamError};

/// One connection's target.
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix from the configured URL, without a trailing `/` (often empty).
    pub prefix: String,
    /// `Host` for requests that do not set one: the authority, without a default port.
    host: HeaderValue,
    pool: Arc<Pool>,
}

impl Upstream {
    /// The request-target (origin form) for `path` (starts with `/`) and `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(self.prefix.len() + path.len() + 1);
        pq.push_str(&self.prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder().path_and_query(pq).build()
    }

    /// Send `req` (its URI from [`Upstream::uri`]) and await the response head.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.set_host(&mut req);
        self.pool.send(req).await
    }

    /// Send a request that asks for a protocol upgrade (on a connection of its own).
    pub async fn send_upgrade(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.set_host(&mut req);
        self.pool.send_upgrade(req).await
    }

    fn set_host(&self, req: &mut Request<ProxyBody>) {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
    }

    /// `host:port` for messages (never the credential).
    pub fn describe(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// Every HTTP connection's upstream, built once at start.
pub struct Upstreams {
    map: HashMap<String, Arc<Upstream>>,
}

impl Upstreams {
    pub fn build<'a>(
        specs: impl IntoIterator<Item = &'a ConnectionSpec>,
        connect_timeout: Duration,
    ) -> Result<Upstreams, String> {
        let mut map = HashMap::new();
        for spec in specs {
            if spec.protocol != Protocol::Http {
                continue;
            }
            let up = build_one(spec, connect_timeout)
                .map_err(|e| format!("connection `{}`: {e}", spec.name))?;
            map.insert(spec.name.clone(), Arc::new(up));
        }
        Ok(Upstreams { map })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.map.get(name).cloned()
    }
}

fn build_one(spec: &ConnectionSpec, connect_timeout: Duration) -> Result<Upstream, String> {
    let uri: Uri = spec
        .upstream
        .parse()
        .map_err(|e| format!("upstream `{}` is not a URL: {e}", spec.upstream))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("upstream `{}` has no scheme", spec.upstream))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(format!(
            "upstream `{}` must be http:// or https://",
            spec.upstream
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("upstream `{}` has no host", spec.upstream))?;
    if uri.query().is_some() {
        return Err(format!(
            "upstream `{}` must not have a query",
            spec.upstream
        ));
    }
    let prefix = uri.path().trim_end_matches('/').to_string();

    let (ca_file, server_name) = match &spec.tls {
        UpstreamTls::VerifyFull {
            ca_file,
            server_name,
        } => (ca_file.clone(), server_name.clone()),
        UpstreamTls::Disable => (None, None),
    };
    let roots = root_store(ca_file.as_deref())?;
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match server_name {
        Some(n) => {
            let name =
                ServerName::try_from(n.clone()).map_err(|e| format!("server_name `{n}`: {e}"))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(http);
    let default_port = if scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    let host = HeaderValue::from_str(&host)
        .map_err(|e| format!("upstream `{}`: host `{host}`: {e}", spec.upstream))?;
    let target = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| format!("upstream `{}`: {e}", spec.upstream))?;
    Ok(Upstream {
        scheme,
        authority,
        prefix,
        host,
        pool: Pool::new(connector, target),
    })
}

/// `ca_file` when given; otherwise the system's roots (falling back to the Mozilla set
/// bundled in the binary when the system has none).
fn root_store(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("ca_file {}: no usable certificate", path.display()));
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}
