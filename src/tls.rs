//! Outbound TLS, for the operator client and callbacks: reqwest on rustls (with ring, which
//! carepay uses anyway), trusting the Mozilla root certificates compiled into the binary, so
//! `https://` works on a host without a CA bundle, plus the operator's own CAs from
//! `--extra-ca-file` for on-premises receivers and a wallet operator with a private CA.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

/// Certificates trusted on top of the built-in roots. Empty by default.
#[derive(Clone, Debug, Default)]
pub struct ExtraRoots(Arc<[reqwest::Certificate]>);

impl ExtraRoots {
    /// A PEM bundle of one or more CA certificates.
    pub fn from_pem(pem: &[u8]) -> Result<ExtraRoots, String> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| String::from("is not a bundle of PEM certificates"))?;
        if certificates.is_empty() {
            return Err(String::from("holds no PEM certificate"));
        }
        let roots = ExtraRoots(certificates.into());
        // A certificate is decoded only when a client is built: build one now, so a bad file
        // stops the start rather than every request after it.
        roots
            .apply(reqwest::Client::builder())
            .build()
            .map_err(|_| String::from("holds a certificate that cannot be a trust anchor"))?;
        Ok(roots)
    }

    /// Read and check the bundle at `path`; `setting` names the setting in the error.
    pub fn load(path: &Path, setting: &str) -> anyhow::Result<ExtraRoots> {
        let pem = std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))?;
        ExtraRoots::from_pem(&pem).map_err(|reason| anyhow::anyhow!("{setting}: {} {reason}", path.display()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Trust these certificates in a client being built.
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for certificate in self.0.iter() {
            builder = builder.add_root_certificate(certificate.clone());
        }
        builder
    }
}

/// The TLS failure in an error's chain, if it has one, in words an endpoint owner or the
/// operator can act on ("TLS failure: invalid peer certificate: UnknownIssuer").
pub fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    rustls_error(error).map(|tls| format!("TLS failure: {tls}"))
}

fn rustls_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    // An `io::Error` hides the error it wraps from `source()` (and the TLS connector wraps
    // one `io::Error` in another): look inside it.
    if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
        let inner: &(dyn StdError + 'static) = inner;
        if let Some(tls) = rustls_error(inner) {
            return Some(tls);
        }
    }
    error.source().and_then(rustls_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert_eq!(ExtraRoots::from_pem(b"").unwrap_err(), "holds no PEM certificate");
        assert_eq!(ExtraRoots::from_pem(b"not pem at all").unwrap_err(), "holds no PEM certificate");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ExtraRoots::from_pem(garbage).is_err());
    }

    #[test]
    fn a_tls_error_is_found_inside_an_io_error() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        assert_eq!(tls_failure(&io).as_deref(), Some("TLS failure: invalid peer certificate: UnknownIssuer"));
        // As the connector reports it: one `io::Error` inside another.
        let wrapped = std::io::Error::other(io);
        assert_eq!(tls_failure(&wrapped).as_deref(), Some("TLS failure: invalid peer certificate: UnknownIssuer"));
        assert_eq!(tls_failure(&std::io::Error::other("reset")), None);
    }
}
