//! NATS URLs as operators write them: `nats://host:4222`, `tls://host:4222`, with
//! `user:password@` or `token@` in front of the host.
//!
//! async-nats 0.51 parses the credentials in a URL but does not send them (only those set
//! on its `ConnectOptions`), so they are taken out here; and every URL this node prints is
//! redacted, so that a password never reaches a log.

use async_nats::ServerAddr;

/// Credentials written into a NATS URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlAuth {
    /// `user:password@`
    UserPassword(String, String),
    /// `token@`
    Token(String),
}

/// Parse `urls`, and the credentials they carry (every URL that carries some must carry
/// the same, since the node is one NATS user whichever server it reaches).
///
/// # Errors
/// A message naming the (redacted) URL that is not a NATS URL, or the two that disagree.
pub(crate) fn parse(urls: &[String]) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), String> {
    let mut addrs = Vec::with_capacity(urls.len());
    let mut auth: Option<(UrlAuth, &str)> = None;
    for url in urls {
        let addr = url
            .parse::<ServerAddr>()
            .map_err(|e| format!("{} is not a NATS URL: {e}", redact(url)))?;
        let this = match (addr.username(), addr.password()) {
            (Some(user), Some(password)) => {
                Some(UrlAuth::UserPassword(user.to_owned(), password.to_owned()))
            }
            (Some(token), None) => Some(UrlAuth::Token(token.to_owned())),
            _ => None,
        };
        if let Some(this) = this {
            match &auth {
                Some((first, first_url)) if *first != this => {
                    return Err(format!(
                        "{} and {} carry different credentials; one node is one NATS user",
                        redact(first_url),
                        redact(url)
                    ));
                }
                Some(_) => {}
                None => auth = Some((this, url)),
            }
        }
        addrs.push(addr);
    }
    Ok((addrs, auth.map(|(auth, _)| auth)))
}

/// `url` with any password or token replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let redacted = match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let userinfo = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{userinfo}@{host}{}", &rest[authority_end..])
        }
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted}"),
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn credentials_come_out_of_the_urls() {
        let (addrs, auth) = parse(&strings(&[
            "nats://relay:s3cret@a:4222",
            "nats://b:4222",
            "tls://relay:s3cret@c:4222",
        ]))
        .expect("parses");
        assert_eq!(addrs.len(), 3);
        assert_eq!(
            auth,
            Some(UrlAuth::UserPassword("relay".into(), "s3cret".into()))
        );
        let (_, auth) = parse(&strings(&["nats://t0ken@a:4222"])).expect("parses");
        assert_eq!(auth, Some(UrlAuth::Token("t0ken".into())));
        let (_, auth) = parse(&strings(&["nats://a:4222"])).expect("parses");
        assert_eq!(auth, None);
    }

    #[test]
    fn disagreeing_credentials_and_bad_urls_are_refused_without_the_secret() {
        let err = parse(&strings(&[
            "nats://relay:one@a:4222",
            "nats://relay:two@b:4222",
        ]))
        .expect_err("refused");
        assert_eq!(
            err,
            "nats://relay:***@a:4222 and nats://relay:***@b:4222 carry different credentials; \
             one node is one NATS user"
        );
        let err = parse(&strings(&["http://relay:s3cret@a:4222"])).expect_err("refused");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            err.starts_with("http://relay:***@a:4222 is not a NATS URL"),
            "{err}"
        );
    }

    #[test]
    fn redaction_hides_passwords_and_tokens_only() {
        assert_eq!(redact("nats://a:4222"), "nats://a:4222");
        assert_eq!(redact("nats://u:p@a:4222"), "nats://u:***@a:4222");
        assert_eq!(redact("nats://tok@a:4222/x"), "nats://***@a:4222/x");
        assert_eq!(redact("u:p@a:4222"), "u:***@a:4222");
        assert_eq!(redact("nats://u:p@ss@a"), "nats://u:***@a");
    }
}
