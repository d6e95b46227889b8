//! Console sessions: a signed, expiring cookie, so any instance that knows the admin token can
//! check it and changing the token ends every session. No server-side state.
//!
//! `tariff_console=v1.<expires_ms>.<nonce>.<mac>`, where `mac` is a blake3 keyed hash (the key
//! derived from the admin token) of `v1.<expires_ms>.<nonce>`. The form token (CSRF) of a
//! session is another keyed hash of its nonce: a page of this session can send it, another site
//! cannot know it (and SameSite=Strict keeps the cookie off its requests anyway).

use crate::time::UnixMillis;

pub const COOKIE: &str = "tariff_console";
/// The login form's own anti-forgery cookie (double submit: cookie and field must match).
pub const LOGIN_COOKIE: &str = "tariff_console_login";
/// How long a console session lasts.
pub const TTL_SECS: u64 = 8 * 3600;

/// A checked session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub expires_at: UnixMillis,
    /// The token every form and mutating call of this session must carry.
    pub csrf: String,
}

fn key(admin_token: &str) -> [u8; 32] {
    blake3::derive_key("tariff console session v1", admin_token.as_bytes())
}

fn mac(key: &[u8; 32], body: &str) -> blake3::Hash {
    blake3::keyed_hash(key, body.as_bytes())
}

fn csrf_of(key: &[u8; 32], nonce: &str) -> String {
    blake3::keyed_hash(key, format!("csrf:{nonce}").as_bytes())
        .to_hex()
        .to_string()
}

/// A new session's cookie value and the session it names.
pub fn issue(admin_token: &str, now: UnixMillis) -> (String, Session) {
    let k = key(admin_token);
    let nonce = format!("{:032x}", rand::random::<u128>());
    let expires_at = now.plus_secs(TTL_SECS);
    let body = format!("v1.{}.{nonce}", expires_at.0);
    let value = format!("{body}.{}", mac(&k, &body).to_hex());
    (
        value,
        Session {
            expires_at,
            csrf: csrf_of(&k, &nonce),
        },
    )
}

/// The session a cookie value names, if it is ours, intact and not expired.
pub fn check(admin_token: &str, value: &str, now: UnixMillis) -> Option<Session> {
    let (body, tag) = value.rsplit_once('.')?;
    let mut parts = body.split('.');
    let (Some("v1"), Some(expires), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let k = key(admin_token);
    let tag = blake3::Hash::from_hex(tag).ok()?;
    // blake3::Hash compares in constant time.
    if mac(&k, body) != tag {
        return None;
    }
    let expires_at = UnixMillis(expires.parse().ok()?);
    if now >= expires_at {
        return None;
    }
    Some(Session {
        expires_at,
        csrf: csrf_of(&k, nonce),
    })
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "admin-token-0123456789abcdef0123456789";

    #[test]
    fn a_session_is_checked_signed_and_expiring() {
        let now = UnixMillis(1_800_000_000_000);
        let (value, s) = issue(TOKEN, now);
        assert_eq!(check(TOKEN, &value, now), Some(s.clone()));
        assert_eq!(
            check(TOKEN, &value, now.plus_secs(TTL_SECS - 1)),
            Some(s.clone())
        );
        assert_eq!(
            check(TOKEN, &value, now.plus_secs(TTL_SECS)),
            None,
            "expired"
        );
        assert_eq!(
            check("another-admin-token-0123456789abcdef", &value, now),
            None
        );
        // Any change to the body or the tag breaks it.
        let later = value.replacen(
            &format!("v1.{}", s.expires_at.0),
            &format!("v1.{}", s.expires_at.0 + 3_600_000),
            1,
        );
        assert_eq!(check(TOKEN, &later, now), None);
        let mut chars: Vec<char> = value.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == '0' { '1' } else { '0' };
        assert_eq!(
            check(TOKEN, &chars.into_iter().collect::<String>(), now),
            None
        );
        for junk in ["", "v1", "v1.1.2", "v2.1.2.3", "x.y.z.w.v"] {
            assert_eq!(check(TOKEN, junk, now), None, "{junk}");
        }
        let (_, other) = issue(TOKEN, now);
        assert_ne!(other.csrf, s.csrf, "each session its own form token");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; tariff_console=v1.2.3.4; tariff_console_login=xyz";
        assert_eq!(cookie(h, COOKIE), Some("v1.2.3.4"));
        assert_eq!(cookie(h, LOGIN_COOKIE), Some("xyz"));
        assert_eq!(cookie(h, "b"), None);
    }
}
