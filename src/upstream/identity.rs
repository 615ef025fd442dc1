//! The client identity shown to the upstream for mutual TLS, read from the files Unleash Edge
//! reads: a PEM certificate chain and key, one PEM file with both, or a PKCS#12 archive (whose
//! first private key and its chain are used, as Edge does). Read once at start; a file that
//! cannot be used stops flagpost with the reason (never the passphrase).

use std::path::Path;

use base64::Engine as _;

use crate::config::ClientIdentity;

/// Largest identity file read: a key and a chain are a few KiB.
const MAX_FILE: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    Ok(bytes)
}

/// DER as a PEM block labelled `label`.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The key and chain of a PKCS#12 archive, as PEM.
fn pkcs12_to_pem(archive: &[u8], passphrase: &str) -> Result<Vec<u8>, String> {
    let store = p12_keystore::KeyStore::from_pkcs12(archive, passphrase)
        .map_err(|e| format!("not a PKCS#12 archive this passphrase opens ({e})"))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("the PKCS#12 archive holds no private key with its certificate")?;
    if chain.chain().is_empty() {
        return Err("the PKCS#12 archive's private key has no certificate".into());
    }
    let mut pem = pem_block("PRIVATE KEY", chain.key());
    for cert in chain.chain() {
        pem.push_str(&pem_block("CERTIFICATE", cert.as_der()));
    }
    Ok(pem.into_bytes())
}

/// The identity as PEM: the key and the certificate chain.
pub(super) fn pem(id: &ClientIdentity) -> Result<Vec<u8>, String> {
    match id {
        ClientIdentity::Pkcs8 { certificate, key } => {
            let mut pem = read(certificate)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            Ok(pem)
        }
        ClientIdentity::Pem(file) => read(file),
        ClientIdentity::Pkcs12 { file, passphrase } => {
            pkcs12_to_pem(&read(file)?, passphrase.expose())
        }
    }
}

/// The identity for the upstream client.
pub(super) fn load(id: &ClientIdentity) -> Result<reqwest::Identity, String> {
    reqwest::Identity::from_pem(&pem(id)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_wrap_at_64_columns_and_read_back() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let block = pem_block("CERTIFICATE", &der);
        assert!(block
            .lines()
            .all(|l| l.len() <= 64 || l.starts_with("-----")));
        let body: String = block.lines().filter(|l| !l.starts_with("-----")).collect();
        let back = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(back, der);
    }

    #[test]
    fn a_wrong_passphrase_or_a_non_archive_is_an_error_without_the_passphrase() {
        for (bytes, pass) in [
            (&b"not pkcs12"[..], "hunter2-secret"),
            (&[0x30, 0x03, 0x02, 0x01, 0x03][..], "hunter2-secret"),
        ] {
            let e = pkcs12_to_pem(bytes, pass).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
