//! Upstreams: the URL of each `protocol = "http"` connection and one pooled hyper client
//! per connection (plain HTTP, or HTTPS verified against the system roots or the
//! connection's `ca_file`).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use warden_pipeline::{ConnectionSpec, Protocol, UpstreamTls};

use crate::body::ProxyBody;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// One connection's target.
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix from the configured URL, without a trailing `/` (often empty).
    pub prefix: String,
    pub client: HttpClient,
}

impl Upstream {
    /// The upstream URI for `path` (starts with `/`) and `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(self.prefix.len() + path.len() + 1);
        pq.push_str(&self.prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
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
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .set_host(true)
        .build(connector);
    Ok(Upstream {
        scheme,
        authority,
        prefix,
        client,
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
