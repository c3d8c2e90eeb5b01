//! Download links: short-lived, signed, bound to one file and one user.
//!
//! A link is `{base}/api/files/{id}/content?token=...` (and, for an image's thumbnail,
//! `{base}/api/files/{id}/thumbnail?token=...`). The token is
//! `{file_id}.{user_id}.{expires}.{mac}` with an HMAC-SHA256 over the first three parts,
//! keyed from the server secret, so any instance sharing `JWT_SECRET` can check it. The
//! route that serves it re-checks the row and the membership on every request, so a link
//! stops working as soon as the file is deleted or the user leaves the channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDateTime};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::db::models::{FileUpload, FileView, Message, MessageParts};

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct DownloadLinks {
    key: Vec<u8>,
    ttl_seconds: i64,
}

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkGrant {
    pub file_id: i32,
    pub user_id: i32,
    pub expires_at: i64,
}

impl DownloadLinks {
    pub fn new(secret: &Secret, ttl_seconds: i64) -> Self {
        // A key of its own, so a download token can never pass as anything else.
        let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes any key size");
        mac.update(b"chatserver download links v1");
        DownloadLinks {
            key: mac.finalize().into_bytes().to_vec(),
            ttl_seconds,
        }
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// A link for `user_id` to fetch `file_id`, and when it expires.
    pub fn issue(&self, base_url: &str, file_id: i32, user_id: i32) -> (String, NaiveDateTime) {
        let (token, expires_at) = self.grant(file_id, user_id);
        let url = format!("{base_url}/api/files/{file_id}/content?token={token}");
        (url, expires_at)
    }

    /// A token for `user_id` to fetch `file_id` (its content or its thumbnail), and when it
    /// expires.
    fn grant(&self, file_id: i32, user_id: i32) -> (String, NaiveDateTime) {
        let expires = chrono::Utc::now().timestamp() + self.ttl_seconds;
        let token = self.token(file_id, user_id, expires);
        let expires_at = DateTime::from_timestamp(expires, 0)
            .expect("a near-future timestamp is in range")
            .naive_utc();
        (token, expires_at)
    }

    fn token(&self, file_id: i32, user_id: i32, expires: i64) -> String {
        let payload = format!("{file_id}.{user_id}.{expires}");
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{mac}")
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(payload.as_bytes());
        mac
    }

    /// A file as `viewer_id` sees it: with a download link issued to them.
    ///
    /// The thumbnail's link carries the same token as the file's: it grants the same file to
    /// the same user, and its route re-checks the row and the membership the same way.
    pub fn file_view(&self, base_url: &str, viewer_id: i32, file: &FileUpload) -> FileView {
        let (token, expires_at) = self.grant(file.id, viewer_id);
        let id = file.id;
        let url = format!("{base_url}/api/files/{id}/content?token={token}");
        let thumbnail_url = file
            .thumbnail_key
            .as_ref()
            .map(|_| format!("{base_url}/api/files/{id}/thumbnail?token={token}"));
        FileView::new(file, url, thumbnail_url, expires_at)
    }

    /// A message with its files as `viewer_id` sees them.
    pub fn message_view(&self, base_url: &str, viewer_id: i32, parts: MessageParts) -> Message {
        let files = parts
            .files
            .iter()
            .map(|f| self.file_view(base_url, viewer_id, f))
            .collect();
        Message::new(parts, files)
    }

    /// Checks the signature and the expiry; `None` for anything forged, altered or stale.
    pub fn verify(&self, token: &str) -> Option<LinkGrant> {
        let (payload, mac) = token.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        // Constant-time comparison.
        self.mac(payload).verify_slice(&mac).ok()?;
        let mut parts = payload.split('.');
        let grant = LinkGrant {
            file_id: parts.next()?.parse().ok()?,
            user_id: parts.next()?.parse().ok()?,
            expires_at: parts.next()?.parse().ok()?,
        };
        if parts.next().is_some() || grant.expires_at < chrono::Utc::now().timestamp() {
            return None;
        }
        Some(grant)
    }
}

/// `scheme://host` the client used to reach us, for absolute links: when the request came
/// `from_proxy` (a trusted one), from its `Forwarded` (or `X-Forwarded-Proto` /
/// `X-Forwarded-Host`) headers; else from `Host`, else `fallback_host`. Forwarding headers
/// from anyone else are ignored: they would let a client have links to another host issued.
pub fn base_url_of(
    headers: &actix_web::http::header::HeaderMap,
    fallback_host: &str,
    from_proxy: bool,
) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let proxy_header = |name: &str| header(name).filter(|_| from_proxy);
    let forwarded = |key: &str| {
        proxy_header("forwarded")?
            .split([';', ','])
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().trim_matches('"'))
    };
    let first = |value: &str| value.split(',').next().unwrap_or("").trim().to_owned();
    let scheme = forwarded("proto")
        .map(str::to_owned)
        .or_else(|| proxy_header("x-forwarded-proto").map(first))
        .unwrap_or_else(|| "http".to_owned());
    let host = forwarded("host")
        .map(str::to_owned)
        .or_else(|| proxy_header("x-forwarded-host").map(first))
        .or_else(|| header("host").map(str::to_owned))
        .unwrap_or_else(|| fallback_host.to_owned());
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(ttl: i64) -> DownloadLinks {
        let secret =
            crate::config::Settings::from_lookup(|k| (k == "JWT_SECRET").then(|| "s".repeat(40)))
                .unwrap()
                .auth
                .jwt_secret;
        DownloadLinks::new(&secret, ttl)
    }

    fn token_of(url: &str) -> &str {
        url.split("token=").nth(1).unwrap()
    }

    #[test]
    fn a_link_grants_its_file_to_its_user() {
        let l = links(60);
        let (url, _) = l.issue("http://h", 7, 9);
        let grant = l.verify(token_of(&url)).unwrap();
        assert_eq!((grant.file_id, grant.user_id), (7, 9));
    }

    #[test]
    fn altered_or_expired_tokens_are_refused() {
        let l = links(60);
        let (url, _) = l.issue("http://h", 7, 9);
        let token = token_of(&url);
        assert!(l.verify(&token.replacen("7.", "8.", 1)).is_none());
        assert!(l.verify(&format!("{token}x")).is_none());
        let expired = links(-10);
        let (url, _) = expired.issue("http://h", 7, 9);
        assert!(expired.verify(token_of(&url)).is_none());
    }

    #[test]
    fn the_base_url_follows_the_proxy_headers() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            map
        };
        assert_eq!(
            base_url_of(&headers(&[]), "fallback", true),
            "http://fallback"
        );
        assert_eq!(
            base_url_of(&headers(&[("host", "a:1")]), "x", true),
            "http://a:1"
        );
        let proxied = headers(&[
            ("host", "a"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "b, c"),
        ]);
        assert_eq!(base_url_of(&proxied, "x", true), "https://b");
        let forwarded = headers(&[
            ("host", "a"),
            ("forwarded", "for=1.2.3.4;proto=https;host=\"chat.example\""),
        ]);
        assert_eq!(base_url_of(&forwarded, "x", true), "https://chat.example");
        // Not from a trusted proxy: only Host counts.
        assert_eq!(base_url_of(&proxied, "x", false), "http://a");
        assert_eq!(base_url_of(&forwarded, "x", false), "http://a");
    }
}

/// Tests added for mutation testing (issue 21): what the tests above leave unchecked.
#[cfg(test)]
mod mutation_tests {
    use super::*;

    fn links(ttl: i64) -> DownloadLinks {
        let secret =
            crate::config::Settings::from_lookup(|k| (k == "JWT_SECRET").then(|| "s".repeat(40)))
                .unwrap()
                .auth
                .jwt_secret;
        DownloadLinks::new(&secret, ttl)
    }

    #[test]
    fn a_link_expires_its_ttl_after_it_is_issued() {
        let l = links(900);
        assert_eq!(l.ttl_seconds(), 900);
        let before = chrono::Utc::now().timestamp();
        let (url, expires_at) = l.issue("http://h", 7, 9);
        let after = chrono::Utc::now().timestamp();
        let expires = expires_at.and_utc().timestamp();
        assert!((before + 900..=after + 900).contains(&expires), "{expires}");
        let token = url.split("token=").nth(1).unwrap();
        assert_eq!(l.verify(token).unwrap().expires_at, expires);
        assert_eq!(
            url,
            format!("http://h/api/files/7/content?token={token}"),
            "the link names its file"
        );
    }

    #[test]
    fn a_signed_token_with_a_fourth_field_is_refused() {
        let l = links(60);
        let expires = chrono::Utc::now().timestamp() + 60;
        let signed = |payload: &str| {
            let mac = URL_SAFE_NO_PAD.encode(l.mac(payload).finalize().into_bytes());
            format!("{payload}.{mac}")
        };
        // The control: the same construction with three fields passes.
        assert!(l.verify(&signed(&format!("7.9.{expires}"))).is_some());
        assert!(l.verify(&signed(&format!("7.9.{expires}.1"))).is_none());
    }
}
