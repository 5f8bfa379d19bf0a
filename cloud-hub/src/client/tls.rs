//! TLS for the command line's client: a rustls configuration trusting the hub's CA alone
//! (never the system's roots: the hub's certificate comes from its own PKI) with an optional
//! client certificate, and the reading of a failed request into what the operator must fix.

use super::ClientError;
use rustls::{AlertDescription, CertificateError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn file(path: &Path, message: impl Into<String>) -> ClientError {
    ClientError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The configuration: roots = the certificates in `ca`; the client certificate and key of
/// `identity` when given.
pub(super) fn client_config(
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            file(
                ca,
                format!("{e}: give the hub's CA with --ca or TANDEM_HUB_CA (its pki_dir/ca.pem)"),
            )
        })?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| file(ca, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file(
            ca,
            "holds no certificate (--ca: the hub's pki_dir/ca.pem)",
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::ingress::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file(&cert, format!("{e} (--cert: a PEM certificate)")))?;
    if chain.is_empty() {
        return Err(file(
            &cert,
            "holds no certificate (--cert: a PEM certificate)",
        ));
    }
    let private = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| file(&key, format!("{e} (--key: the PEM key of --cert)")))?;
    builder
        .with_client_auth_cert(chain, private)
        .map_err(|e| file(&key, format!("{e}: is it the key of {}?", cert.display())))
}

/// The rustls error somewhere in `err`'s chain: an IO error hides its inner error from
/// `source()` (and hyper wraps rustls's IO error in another), so each one is opened.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(i) = inner {
            if let Some(r) = i.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|x| x as &(dyn std::error::Error + 'static));
        }
        next = e.source();
    }
    None
}

/// Every message of `err`'s chain, joined.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let t = e.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The hub's verdict on our certificate, asked again on a connection of our own: TLS 1.3 lets
/// the client send its request before the server has checked the client certificate, and a
/// server that refuses it closes a connection with the request unread, which resets it and
/// loses the alert. Here nothing is sent after the handshake, so the alert arrives. `None`
/// when the hub accepts the certificate (nothing comes within the wait) or cannot be reached.
fn verdict(url: &str, config: &Arc<rustls::ClientConfig>) -> Option<rustls::Error> {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.trim_matches(['[', ']']).to_string();
    let port = u.port_or_known_default()?;
    let addr = (host.as_str(), port).to_socket_addrs().ok()?.next()?;
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, VERDICT_WAIT).ok()?;
    tcp.set_read_timeout(Some(VERDICT_WAIT)).ok()?;
    tcp.set_write_timeout(Some(VERDICT_WAIT)).ok()?;
    let name = rustls_pki_types::ServerName::try_from(host).ok()?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name).ok()?;
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let mut byte = [0u8; 1];
    stream
        .read_exact(&mut byte)
        .err()
        .and_then(|e| rustls_error(&e).cloned())
}

/// How long [`verdict`] waits for the hub's answer.
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a failed request means for the operator; `config`: the TLS configuration of an
/// HTTPS client, to ask the hub's verdict on the certificate when the connection just closed.
pub(super) fn explain(
    err: &reqwest::Error,
    url: &str,
    config: Option<&Arc<rustls::ClientConfig>>,
) -> ClientError {
    let tls = |message: String| ClientError::Tls {
        url: url.to_string(),
        message,
    };
    let found = rustls_error(err).cloned().or_else(|| {
        config
            .filter(|_| !err.is_connect())
            .and_then(|c| verdict(url, c))
    });
    if let Some(r) = &found {
        return tls(match r {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the hub's certificate is not signed by the CA given ({c:?}): give the hub's own CA with --ca or TANDEM_HUB_CA (its pki_dir/ca.pem)"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the hub's certificate is not valid for the host in the URL ({c:?}): use a name or address it carries, or add it with `tandem-hub pki reissue-hub --name/--ip`"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                    "the hub's certificate has expired ({c:?}): `tandem-hub pki reissue-hub` on the hub, then restart it"
                ),
                other => format!("the hub's certificate is refused: {other:?}"),
            },
            rustls::Error::AlertReceived(a) => match a {
                AlertDescription::CertificateRevoked => "the hub refused the client certificate: it is revoked (issue a new one: `tandem-hub operator add NAME`)".into(),
                AlertDescription::CertificateExpired => "the hub refused the client certificate: it has expired (issue a new one: `tandem-hub operator add NAME`)".into(),
                AlertDescription::CertificateRequired => "the hub's HTTPS API requires a client certificate: give --cert/--key (TANDEM_HUB_CERT/TANDEM_HUB_KEY), an operator's from `tandem-hub operator add NAME`".into(),
                AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::DecryptError => format!(
                    "the hub refused the client certificate ({a:?}): it is not from this hub's CA, or not a client certificate; use one the hub's `tandem-hub operator add` issued"
                ),
                other => format!("the hub ended the handshake: {other:?}"),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the hub's address does not speak TLS: its API is plain HTTP (http.tls = false), use --hub http://...".into()
            }
            other => other.to_string(),
        });
    }
    let text = chain_text(err);
    if err.is_connect() {
        return ClientError::Unreachable {
            url: url.to_string(),
            cause: text,
        };
    }
    if err.is_timeout() {
        return ClientError::Unreachable {
            url: url.to_string(),
            cause: format!("no answer within {} s", super::REQUEST_TIMEOUT.as_secs()),
        };
    }
    if url.starts_with("http://") {
        return ClientError::Unreachable {
            url: url.to_string(),
            cause: format!(
                "{text} (if the hub's API is HTTPS, http.tls, use --hub https://... with --ca and --cert/--key)"
            ),
        };
    }
    ClientError::Unreachable {
        url: url.to_string(),
        cause: text,
    }
}
