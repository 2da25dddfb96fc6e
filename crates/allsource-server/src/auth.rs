//! API keys: who may read and who may write. With at least one key configured, the
//! request guard (module `guard`) asks every request but those to the open paths
//! ([`OPEN_PATHS`]) for `Authorization: Bearer <key>`: `401 Unauthorized` without a
//! known key, `403 Forbidden` for a read key on a method that writes (anything but
//! `GET`, `HEAD` and `OPTIONS`). It checks before the request takes a request slot.
//!
//! Keys are kept only as SHA-256 digests, and a presented token is checked against
//! every one of them in constant time (the `subtle` crate), without stopping at a
//! match, so the time a check takes says nothing about the keys. Neither keys nor
//! tokens are ever logged: [`ApiKey`] and [`ApiKeys`] print no key material, and the
//! errors of [`ApiKey::parse`] do not repeat their input.

use std::fmt;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method};
use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::AppError;

/// The paths anyone may use, keys or not: the liveness probe and the API description.
pub const OPEN_PATHS: &[&str] = &["/health", "/openapi.json"];

/// What a key may do. `Write` implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every `GET` (and `HEAD`, `OPTIONS`).
    Read,
    /// Everything: reads and appends.
    Write,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    /// The small number the constant-time lookup selects; 0 is "no key".
    fn code(self) -> u8 {
        match self {
            Role::Read => 1,
            Role::Write => 2,
        }
    }

    fn from_code(code: u8) -> Option<Role> {
        match code {
            1 => Some(Role::Read),
            2 => Some(Role::Write),
            _ => None,
        }
    }
}

/// One API key with its role, kept as the SHA-256 digest of the key. Its `Debug`
/// prints the role only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; SHA256_OUTPUT_LEN],
    role: Role,
}

/// Why a key or a `KEY:ROLE` text was refused. The message never contains the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No `:` separates a key from a role.
    MissingRole,
    /// The role is neither `read` nor `write`.
    UnknownRole,
    /// The key is empty.
    EmptyKey,
    /// The key has a character other than visible ASCII (`!` to `~`) or has a `,`.
    BadCharacter,
    /// The same key is given twice with different roles.
    Conflict,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::MissingRole => "expected KEY:ROLE (ROLE is read or write), found no ':'",
            KeyError::UnknownRole => "the role after the last ':' must be read or write",
            KeyError::EmptyKey => "the key before the ':' is empty",
            KeyError::BadCharacter => "a key may only have visible ASCII characters ('!' to '~'), and no ','",
            KeyError::Conflict => "the same key is given twice with different roles",
        })
    }
}

impl std::error::Error for KeyError {}

impl ApiKey {
    /// A key with its role. Keys are visible ASCII (`!` to `~`) without `,` (the
    /// separator of `ALLSOURCE_API_KEYS`), so that they fit in a header and a list.
    pub fn new(key: &str, role: Role) -> Result<ApiKey, KeyError> {
        if key.is_empty() {
            return Err(KeyError::EmptyKey);
        }
        if !key.bytes().all(|byte| byte.is_ascii_graphic() && byte != b',') {
            return Err(KeyError::BadCharacter);
        }
        Ok(ApiKey { digest: sha256(key.as_bytes()), role })
    }

    /// Parses `KEY:ROLE`; the role follows the last `:`, so a key may hold a `:`.
    /// Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<ApiKey, KeyError> {
        let (key, role) = text.trim().rsplit_once(':').ok_or(KeyError::MissingRole)?;
        let role = match role {
            "read" => Role::Read,
            "write" => Role::Write,
            _ => return Err(KeyError::UnknownRole),
        };
        ApiKey::new(key, role)
    }

    /// What the key may do.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(***:{})", self.role.as_str())
    }
}

/// The configured keys; empty (the default) means the API is open to everyone. Its
/// `Debug` prints how many keys there are, nothing more.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<[ApiKey]>,
}

impl ApiKeys {
    /// The set of `keys`. A key given twice with the same role counts once; with two
    /// roles it is a [`KeyError::Conflict`].
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> Result<ApiKeys, KeyError> {
        let mut unique: Vec<ApiKey> = Vec::new();
        for key in keys {
            match unique.iter().find(|known| known.digest == key.digest) {
                Some(known) if known.role == key.role => {}
                Some(_) => return Err(KeyError::Conflict),
                None => unique.push(key),
            }
        }
        Ok(ApiKeys { keys: unique.into() })
    }

    /// Whether no key is configured (authentication is off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many distinct keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The role of the key `token`, if it is one. Compares the token's digest with
    /// every key's in constant time and looks at all of them whatever matches.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let presented = sha256(token);
        let mut role_code = 0u8;
        for key in self.keys.iter() {
            let matches = key.digest.ct_eq(&presented);
            role_code.conditional_assign(&key.role.code(), matches);
        }
        Role::from_code(role_code)
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

/// The check the request guard makes when keys are configured: a request passes if its
/// path is open or its bearer token is a key whose role allows the method; it gets a
/// `401` or a `403` otherwise.
pub(crate) fn check(keys: &ApiKeys, request: &Request) -> Result<(), AppError> {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return Ok(());
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Err(AppError::Unauthorized {
            message: "this server needs an API key: send 'Authorization: Bearer <key>'".to_string(),
            invalid_token: false,
        });
    };
    let Some(role) = keys.role_of(token) else {
        return Err(AppError::Unauthorized {
            message: "the bearer token is not a known API key".to_string(),
            invalid_token: true,
        });
    };
    if role < role_needed(request.method()) {
        return Err(AppError::Forbidden(format!(
            "a read key cannot {} {}: it needs a write key",
            request.method(),
            request.uri().path()
        )));
    }
    Ok(())
}

/// The role a method needs: reading methods need `Read`, every other one `Write`.
fn role_needed(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Role::Read
    } else {
        Role::Write
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), or
/// `None` without one. Several `Authorization` headers are refused: which one counts
/// would be a guess.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn sha256(bytes: &[u8]) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn keys(specs: &[&str]) -> ApiKeys {
        ApiKeys::new(specs.iter().map(|spec| ApiKey::parse(spec).unwrap())).unwrap()
    }

    #[test]
    fn parse_key_and_role() {
        assert_eq!(ApiKey::parse("abc:read").unwrap().role(), Role::Read);
        assert_eq!(ApiKey::parse(" abc:write \n").unwrap().role(), Role::Write);
        // The role follows the last ':'.
        let key = ApiKey::parse("a:b:write").unwrap();
        assert_eq!(keys(&["a:b:write"]).role_of(b"a:b"), Some(Role::Write));
        assert_eq!(key.role(), Role::Write);
        assert_eq!(ApiKey::parse("abc"), Err(KeyError::MissingRole));
        assert_eq!(ApiKey::parse("abc:admin"), Err(KeyError::UnknownRole));
        assert_eq!(ApiKey::parse("abc:Read"), Err(KeyError::UnknownRole));
        assert_eq!(ApiKey::parse(":read"), Err(KeyError::EmptyKey));
        assert_eq!(ApiKey::parse("a b:read"), Err(KeyError::BadCharacter));
        assert_eq!(ApiKey::parse("a,b:read"), Err(KeyError::BadCharacter));
        assert_eq!(ApiKey::parse("é:read"), Err(KeyError::BadCharacter));
    }

    #[test]
    fn lookup() {
        let keys = keys(&["reader-key:read", "writer-key:write"]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.role_of(b"reader-key"), Some(Role::Read));
        assert_eq!(keys.role_of(b"writer-key"), Some(Role::Write));
        assert_eq!(keys.role_of(b"writer-ke"), None);
        assert_eq!(keys.role_of(b"writer-key2"), None);
        assert_eq!(keys.role_of(b""), None);
        assert_eq!(ApiKeys::default().role_of(b"reader-key"), None);
        assert!(ApiKeys::default().is_empty());
    }

    #[test]
    fn duplicates() {
        assert_eq!(keys(&["k:read", "k:read"]).len(), 1);
        let conflict = ApiKeys::new(["k:read", "k:write"].map(|spec| ApiKey::parse(spec).unwrap()));
        assert_eq!(conflict.unwrap_err(), KeyError::Conflict);
    }

    #[test]
    fn debug_hides_keys() {
        let key = ApiKey::parse("very-secret-key:write").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***:write)");
        let all = keys(&["very-secret-key:write", "other-secret:read"]);
        assert_eq!(format!("{all:?}"), "ApiKeys(2 keys)");
        for error in [KeyError::MissingRole, KeyError::UnknownRole, KeyError::BadCharacter] {
            assert!(!error.to_string().contains("secret"));
        }
    }

    #[test]
    fn bearer_tokens() {
        let check = |values: &[&str], expected: Option<&str>| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(bearer_token(&headers), expected.map(str::as_bytes), "{values:?}");
        };
        check(&[], None);
        check(&["Bearer abc"], Some("abc"));
        check(&["bearer abc"], Some("abc"));
        check(&["BEARER   abc  "], Some("abc"));
        check(&["Bearer "], None);
        check(&["Bearer"], None);
        check(&["Basic YWJjOmRlZg=="], None);
        check(&["Bearerabc"], None);
        check(&["Bearer abc", "Bearer def"], None);
    }

    #[test]
    fn methods() {
        assert_eq!(role_needed(&Method::GET), Role::Read);
        assert_eq!(role_needed(&Method::HEAD), Role::Read);
        assert_eq!(role_needed(&Method::OPTIONS), Role::Read);
        assert_eq!(role_needed(&Method::POST), Role::Write);
        assert_eq!(role_needed(&Method::DELETE), Role::Write);
        assert!(Role::Write > Role::Read);
    }
}
