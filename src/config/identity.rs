//! The client identity shown to the upstream for mutual TLS, as configured.

use std::path::PathBuf;

/// The client identity flagpost shows the upstream for mutual TLS, in the forms Unleash Edge
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A PEM certificate chain (leaf first) and its PEM private key, in two files.
    Pkcs8 { certificate: PathBuf, key: PathBuf },
    /// A PKCS#12 archive (`.pfx`, `.p12`) and its passphrase.
    Pkcs12 {
        file: PathBuf,
        passphrase: crate::token::Secret,
    },
    /// One PEM file with the private key and the certificate chain.
    Pem(PathBuf),
}

impl ClientIdentity {
    /// The files, for the redacted configuration and error messages.
    pub fn describe(&self) -> String {
        match self {
            ClientIdentity::Pkcs8 { certificate, key } => {
                format!("{} with key {}", certificate.display(), key.display())
            }
            ClientIdentity::Pkcs12 { file, .. } => format!("PKCS#12 {}", file.display()),
            ClientIdentity::Pem(file) => format!("PEM {}", file.display()),
        }
    }
}
