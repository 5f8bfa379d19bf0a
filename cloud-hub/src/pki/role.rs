//! The role the hub's CA writes into a certificate, and the principal a verified client
//! certificate names: a device (its DNS name), an operator (the operator key purpose) or a
//! subscriber (the subscriber key purpose: a read-only MQTT client, `pki::subscriber`).
//!
//! The role is only ever what the hub put into the certificate: device certificates carry
//! their name as the DNS subject name and client authentication as their one key purpose;
//! operator certificates carry no DNS name, the CN `operator:NAME`, and an extended key usage
//! of client authentication plus [`OPERATOR_PURPOSE`]; subscriber certificates likewise carry
//! no DNS name, the CN `subscriber:NAME` and [`SUBSCRIBER_PURPOSE`]. Whoever signs a certificate request
//! must build the certificate from the hub's own parameters and take only the public key from
//! the request. A certificate that names more than one role (a DNS name and a purpose, or both
//! purposes) is none of them: it is refused everywhere.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The operator key purpose: an OID under `2.25` (an arc of UUIDs, ITU-T X.667), so it needs
/// no registration and clashes with nothing (UUID 57d94f50-5537-4094-b107-ae5728881843).
pub const OPERATOR_PURPOSE: &str = "2.25.116771172726574449890355349435636521027";

/// The DER content of [`OPERATOR_PURPOSE`].
const OPERATOR_PURPOSE_DER: [u8; 20] = [
    0x69, 0x81, 0xaf, 0xd9, 0xa7, 0xd4, 0x8a, 0xd3, 0xba, 0x82, 0xa9, 0xb1, 0x83, 0xeb, 0xca, 0xf2,
    0xc4, 0xa0, 0xb0, 0x43,
];

/// The subscriber key purpose: an OID under `2.25` like [`OPERATOR_PURPOSE`] (UUID
/// 26aa1300-02c8-4dac-a9d9-4aa5899de39b).
pub const SUBSCRIBER_PURPOSE: &str = "2.25.51393739672421315239796580814704993179";

/// The DER content of [`SUBSCRIBER_PURPOSE`].
const SUBSCRIBER_PURPOSE_DER: [u8; 19] = [
    0x69, 0xcd, 0xaa, 0x89, 0xc0, 0x80, 0xac, 0xc2, 0xb6, 0xd9, 0xa9, 0xec, 0xd2, 0xd4, 0xd8, 0xcc,
    0xf7, 0xc7, 0x1b,
];

/// The DER content of id-kp-clientAuth (1.3.6.1.5.5.7.3.2).
const CLIENT_AUTH_DER: [u8; 8] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The OID of the extended key usage extension (2.5.29.37).
const EKU_OID: [u64; 4] = [2, 5, 29, 37];

/// The prefix of an operator certificate's CN; `:` is never in a device name, so an operator's
/// identity (as the MQTT broker's username, say) never equals a device's.
pub const OPERATOR_CN_PREFIX: &str = "operator:";

/// The prefix of a subscriber certificate's CN (its MQTT username): `:` keeps it apart from
/// every device name, and the prefix from every operator's.
pub const SUBSCRIBER_CN_PREFIX: &str = "subscriber:";

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRole {
    /// A device, by name.
    Device(String),
    /// An operator, by name.
    Operator(String),
    /// A read-only MQTT subscriber, by name: no right on the hub's API or QUIC ingress.
    Subscriber(String),
}

/// The extended key usage extension of an operator certificate: client authentication and
/// [`OPERATOR_PURPOSE`] (written by hand: rcgen's own builder takes only 64-bit OID arcs).
pub fn operator_eku_extension() -> rcgen::CustomExtension {
    eku_extension(&OPERATOR_PURPOSE_DER)
}

/// The extended key usage extension of a subscriber certificate: client authentication and
/// [`SUBSCRIBER_PURPOSE`].
pub fn subscriber_eku_extension() -> rcgen::CustomExtension {
    eku_extension(&SUBSCRIBER_PURPOSE_DER)
}

fn eku_extension(purpose: &[u8]) -> rcgen::CustomExtension {
    let mut oids = Vec::new();
    for oid in [&CLIENT_AUTH_DER[..], purpose] {
        oids.push(0x06);
        oids.push(u8::try_from(oid.len()).expect("an OID of the table is under 128 bytes"));
        oids.extend_from_slice(oid);
    }
    let mut der = vec![
        0x30,
        u8::try_from(oids.len()).expect("two short OIDs are under 128 bytes"),
    ];
    der.extend(oids);
    rcgen::CustomExtension::from_oid_content(&EKU_OID, der)
}

/// The role of the leaf of a chain the TLS verifier accepted; `None` when it names no role, or
/// both.
pub fn cert_role(chain: &[CertificateDer<'_>]) -> Option<CertRole> {
    let leaf = chain.first()?;
    let dns = webpki::EndEntityCert::try_from(leaf)
        .ok()?
        .valid_dns_names()
        .next()
        .map(str::to_string);
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let purposes = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| e.value.other.clone())
        .unwrap_or_default();
    let has = |der: &[u8]| purposes.iter().any(|oid| oid.as_bytes() == der);
    let named = |prefix: &str| {
        let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
        let name = cn.strip_prefix(prefix)?;
        super::valid_device_name(name).then(|| name.to_string())
    };
    match (
        has(&OPERATOR_PURPOSE_DER),
        has(&SUBSCRIBER_PURPOSE_DER),
        dns,
    ) {
        (false, false, Some(device)) => Some(CertRole::Device(device)),
        (true, false, None) => named(OPERATOR_CN_PREFIX).map(CertRole::Operator),
        (false, true, None) => named(SUBSCRIBER_CN_PREFIX).map(CertRole::Subscriber),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes OID content bytes whose arcs fit in 128 bits (the UUID arc does).
    fn dotted(der: &[u8]) -> String {
        let mut arcs: Vec<u128> = Vec::new();
        let mut acc: u128 = 0;
        for b in der {
            acc = (acc << 7) | u128::from(b & 0x7f);
            if b & 0x80 == 0 {
                arcs.push(acc);
                acc = 0;
            }
        }
        let first = arcs.remove(0);
        let (a, b) = if first < 80 {
            (first / 40, first % 40)
        } else {
            (2, first - 80)
        };
        std::iter::once(a)
            .chain(std::iter::once(b))
            .chain(arcs)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn the_oids_encode_their_dotted_forms() {
        assert_eq!(dotted(&OPERATOR_PURPOSE_DER), OPERATOR_PURPOSE);
        assert_eq!(dotted(&SUBSCRIBER_PURPOSE_DER), SUBSCRIBER_PURPOSE);
        assert_eq!(dotted(&CLIENT_AUTH_DER), "1.3.6.1.5.5.7.3.2");
    }
}
