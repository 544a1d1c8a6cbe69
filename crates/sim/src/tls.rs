//! TLS for the simulated API servers, as a cluster's PKI sets it up: one
//! certificate authority per fleet, a serving certificate for loopback, and
//! client certificates whose subject names a user and its groups (CN and O,
//! as kube-apiserver's x509 authenticator reads them). Clients such as
//! kubectl send credentials only over TLS, so kubeconfigs point at `https`.
//!
//! The same port also answers plain HTTP (the first byte of a connection
//! tells them apart): the app metrics the gates and Prometheus scrape, the
//! request counts tests read, and tests' raw API requests with a bearer token.

use std::collections::HashMap;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::auth::UserInfo;

/// A client certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The fleet's PKI.
pub struct FleetTls {
    pub ca_pem: String,
    acceptor: TlsAcceptor,
    /// Who each issued client certificate (by DER) names.
    clients: HashMap<Vec<u8>, UserInfo>,
    /// `kubernetes-admin` in `system:masters`, as kubeadm's admin.conf.
    pub admin: ClientCert,
}

impl std::fmt::Debug for FleetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTls").finish_non_exhaustive()
    }
}

pub const ADMIN_CN: &str = "kubernetes-admin";

impl FleetTls {
    pub fn new() -> Result<FleetTls, String> {
        let err = |e: rcgen::Error| e.to_string();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cutover-sim-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?)
            .map_err(err)?;

        let mut serving =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).map_err(err)?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serving_key = KeyPair::generate().map_err(err)?;
        let serving_cert = serving.signed_by(&serving_key, &ca).map_err(err)?;

        let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        admin.distinguished_name.push(DnType::CommonName, ADMIN_CN);
        admin
            .distinguished_name
            .push(DnType::OrganizationName, super::auth::MASTERS);
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let admin_key = KeyPair::generate().map_err(err)?;
        let admin_cert = admin.signed_by(&admin_key, &ca).map_err(err)?;

        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).map_err(|e| e.to_string())?;
        // A client certificate is optional: tokens authenticate the rest.
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![serving_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving_key.serialize_der())),
            )
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let mut clients = HashMap::new();
        clients.insert(
            admin_cert.der().to_vec(),
            UserInfo::named(ADMIN_CN, &[super::auth::MASTERS]),
        );
        Ok(FleetTls {
            ca_pem: ca.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            clients,
            admin: ClientCert {
                cert_pem: admin_cert.pem(),
                key_pem: admin_key.serialize_pem(),
            },
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The user a verified client certificate names.
    pub fn client_user(&self, cert: &CertificateDer<'_>) -> Option<UserInfo> {
        self.clients.get(cert.as_ref()).cloned()
    }
}

/// Base64 of some bytes, as kubeconfigs hold certificates and keys.
pub fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
