//! Artifact references: `host[:port]/repository[:tag][@sha256:<hex>]`, optionally with an `oci://`
//! prefix. The registry host is always explicit: there is no implicit Docker Hub.

use crate::error::OciError;
use std::fmt;
use std::str::FromStr;

/// A parsed reference to an artifact in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Whether `digest` is `sha256:` and 64 lowercase or uppercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Reference {
    /// The registry host, with its port if one was given (`127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`team/redact`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest (`sha256:<hex>`), if the reference is pinned.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, the name errors use.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same artifact pinned to `digest` (the tag is kept, for display only).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_ascii_lowercase()),
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// `registry/repository@digest` when pinned, else `registry/repository:tag` (tag `latest` when
    /// none is given).
    pub fn fetch_target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{}@{digest}", self.name()),
            (None, Some(tag)) => format!("{}:{tag}", self.name()),
            (None, None) => format!("{}:latest", self.name()),
        }
    }

    pub(crate) fn to_client(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), Some(tag)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.clone(),
            ),
            (Some(digest), None) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (None, tag) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = OciError;

    fn from_str(text: &str) -> Result<Self, OciError> {
        let bad = |message: &str| OciError::BadReference {
            reference: text.to_string(),
            message: message.to_string(),
        };
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        if rest.is_empty() {
            return Err(bad("is empty"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(bad(
                        "the digest after `@` must be `sha256:` and 64 hex digits",
                    ));
                }
                (rest, Some(digest.to_ascii_lowercase()))
            }
            None => (rest, None),
        };
        let Some((registry, path)) = rest.split_once('/') else {
            return Err(bad(
                "name the registry host and the repository: host[:port]/repository[:tag][@sha256:…]",
            ));
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port, or `localhost`); eventplug has no default registry",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(bad(
                    "the tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`",
                ));
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase path components of [a-z0-9._-] separated by `/`",
            ));
        }
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_hosts_ports_tags_and_digests() {
        let r: Reference = "127.0.0.1:5000/team/redact:v1".parse().expect("valid");
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("127.0.0.1:5000", "team/redact", Some("v1"), None)
        );
        let r: Reference = format!("oci://ghcr.io/acme/redact@{D}")
            .parse()
            .expect("valid");
        assert_eq!(
            (r.registry(), r.tag(), r.digest()),
            ("ghcr.io", None, Some(D))
        );
        let r: Reference = format!("localhost/x:v2@{D}").parse().expect("valid");
        assert_eq!(r.to_string(), format!("localhost/x:v2@{D}"));
        assert_eq!(r.fetch_target(), format!("localhost/x@{D}"));
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for text in [
            "",
            "redact",
            "team/redact:v1",
            "ghcr.io/Team/redact",
            "ghcr.io/team/redact@sha256:abc",
            "ghcr.io/team/redact:-x",
            "ghcr.io/",
        ] {
            let error = text.parse::<Reference>().expect_err(text);
            assert!(
                error.to_string().contains("not a valid reference"),
                "{error}"
            );
        }
    }
}
