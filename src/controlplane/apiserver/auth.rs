//! Authentication by client certificate: user = subject CN, groups = subject O values (as
//! kube-apiserver's x509 authenticator). rustls has already verified the chain against the cluster CA.
//!
//! Authorization is `controlplane::auth` (Node, RBAC), run after this.

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Read one DER TLV at the start of `b`: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = b.get(hdr..hdr + len)?;
    Some((tag, content, &b[hdr + len..]))
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// Extract (CN, [O...]) from a DER certificate's subject.
pub fn subject_of(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (t, cert, _) = tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let (t, tbs, _) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (t, _, r) = tlv(rest)?;
    if t == 0xa0 {
        rest = r; // version
        rest = tlv(rest)?.2; // serial
    } else {
        rest = r; // that was the serial
    }
    rest = tlv(rest)?.2; // signature algorithm
    rest = tlv(rest)?.2; // issuer
    rest = tlv(rest)?.2; // validity
    let (t, mut name, _) = tlv(rest)?;
    if t != 0x30 {
        return None;
    }
    let mut cn = None;
    let mut orgs = Vec::new();
    while !name.is_empty() {
        let (t, mut set, r) = tlv(name)?;
        name = r;
        if t != 0x31 {
            return None;
        }
        while !set.is_empty() {
            let (_, atv, r) = tlv(set)?;
            set = r;
            let (t, oid, r) = tlv(atv)?;
            if t != 0x06 {
                return None;
            }
            let (_, value, _) = tlv(r)?;
            let value = String::from_utf8_lossy(value).into_owned();
            if oid == OID_CN {
                cn = Some(value);
            } else if oid == OID_O {
                orgs.push(value);
            }
        }
    }
    Some((cn.unwrap_or_default(), orgs))
}

/// The user for a verified client certificate chain (leaf first); None when there is none.
pub fn user_from_certs(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<User> {
    let leaf = certs?.first()?;
    let (name, mut groups) = subject_of(leaf.as_ref())?;
    if name.is_empty() {
        return None;
    }
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cn_and_orgs() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let cert = params.self_signed(&key).unwrap();
        let (cn, orgs) = subject_of(cert.der()).unwrap();
        assert_eq!(cn, "system:node:n1");
        assert_eq!(orgs, vec!["system:nodes".to_string()]);
        let u = user_from_certs(Some(std::slice::from_ref(cert.der()))).unwrap();
        assert_eq!(u.groups, vec!["system:nodes", "system:authenticated"]);
        assert!(user_from_certs(None).is_none());
        assert!(subject_of(&[0x30, 0x05, 0x01]).is_none());
    }
}
