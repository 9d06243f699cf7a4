//! `switchyard certs`: a certificate authority and certificates it issued,
//! as PEM files, for running services with CA trust and mutual TLS (a
//! deployment's `SWITCHYARD_TLS_CERT`, `SWITCHYARD_TLS_KEY`,
//! `SWITCHYARD_TLS_CA`, `SWITCHYARD_TLS_CLIENT_CA`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use switchyard::transport::quic::Fingerprint;

/// Writes `ca.pem`, `ca-key.pem` and, for each `NAME[,SAN...]`, `NAME.pem`
/// and `NAME-key.pem` into `out`; every certificate names its SANs (DNS
/// names or IP addresses), the first being NAME.
pub(crate) fn run(out: &Path, specs: &[String]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("name at least one certificate: NAME[,SAN...]".into());
    }
    std::fs::create_dir_all(out)
        .map_err(|err| format!("cannot create {}: {err}", out.display()))?;
    let failed = |what: &str, err: rcgen::Error| format!("cannot make {what}: {err}");
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("the CA", e))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().map_err(|e| failed("the CA key", e))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| failed("the CA", e))?;
    write(out, "ca.pem", &ca_cert.pem(), false)?;
    write(out, "ca-key.pem", &ca_key.serialize_pem(), true)?;
    println!("ca.pem         the CA (trust it: SWITCHYARD_TLS_CA, SWITCHYARD_TLS_CLIENT_CA)");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    for spec in specs {
        let sans: Vec<String> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let Some(name) = sans.first().cloned() else {
            return Err(format!("{spec:?} names no certificate"));
        };
        if name.contains('/') || name.starts_with('.') {
            return Err(format!("{name:?} cannot be a file name"));
        }
        let mut params =
            rcgen::CertificateParams::new(sans.clone()).map_err(|e| failed(&name, e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.clone());
        // Both: a service serves, and calls other services with the same
        // certificate under mutual TLS.
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(|e| failed(&name, e))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| failed(&name, e))?;
        write(out, &format!("{name}.pem"), &cert.pem(), false)?;
        write(out, &format!("{name}-key.pem"), &key.serialize_pem(), true)?;
        println!(
            "{name}.pem  for {}  (SHA-256 {})",
            sans.join(", "),
            Fingerprint::of(cert.der())
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str, secret: bool) -> Result<(), String> {
    let path = dir.join(file);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    options.mode(if secret { 0o600 } else { 0o644 });
    options
        .open(&path)
        .and_then(|mut f| {
            // The mode above applies only to a new file: set it on an old one.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(if secret {
                0o600
            } else {
                0o644
            }))?;
            f.write_all(text.as_bytes())
        })
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}
