//! HS256 JWTs: issued at login, validated strictly on every request.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthUser;
use crate::config::Secret;
use crate::error::{AppError, ErrorCode};

const ISSUER: &str = "chatserver";
const AUDIENCE: &str = "chatserver-api";
/// Clock skew tolerated between instances, in seconds.
const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string (RFC 7519 §4.1.2).
    sub: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_seconds: i64,
}

/// A freshly issued token.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: i64,
}

impl TokenService {
    pub fn new(secret: &Secret, ttl_seconds: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        TokenService {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            ttl_seconds,
        }
    }

    pub fn issue(&self, user_id: i32) -> Result<IssuedToken, AppError> {
        let iat = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            iat,
            exp: iat + self.ttl_seconds,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("signing a token: {e}")))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Any failure (signature, algorithm, expiry, claims, shape) is a plain 401.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AppError> {
        let invalid =
            || AppError::unauthorized(ErrorCode::InvalidToken, "the token is invalid or expired");
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(reason = %e, "token refused");
                invalid()
            })?;
        // A token issued in the future (beyond the clock-skew leeway) was not issued by us
        // at the time it says: refused (jsonwebtoken checks `exp` and `nbf`, not `iat`).
        let now = chrono::Utc::now().timestamp();
        if data.claims.iat > now + LEEWAY_SECONDS as i64 {
            tracing::debug!("token refused: issued in the future");
            return Err(invalid());
        }
        let id = data.claims.sub.parse::<i32>().map_err(|_| invalid())?;
        Ok(AuthUser {
            id,
            expires_at: data.claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(&test_secret(), 3600)
    }

    fn test_secret() -> Secret {
        crate::config::Settings::from_lookup(|k| (k == "JWT_SECRET").then(|| "k".repeat(32)))
            .unwrap()
            .auth
            .jwt_secret
    }

    #[test]
    fn issued_tokens_verify() {
        let s = service();
        let t = s.issue(42).unwrap();
        assert_eq!(s.verify(&t.token).unwrap().id, 42);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(service().verify("a.b.c").is_err());
        assert!(service().verify("").is_err());
    }
}

/// Tests added for mutation testing (issue 21): what the tests above leave unchecked.
#[cfg(test)]
mod mutation_tests {
    use super::*;

    fn service(ttl: i64) -> TokenService {
        let secret =
            crate::config::Settings::from_lookup(|k| (k == "JWT_SECRET").then(|| "k".repeat(32)))
                .unwrap()
                .auth
                .jwt_secret;
        TokenService::new(&secret, ttl)
    }

    #[test]
    fn a_token_expires_its_ttl_after_it_is_issued() {
        let s = service(3600);
        let before = chrono::Utc::now().timestamp();
        let issued = s.issue(42).unwrap();
        let after = chrono::Utc::now().timestamp();
        assert!(
            (before + 3600..=after + 3600).contains(&issued.expires_at),
            "{}",
            issued.expires_at
        );
        assert_eq!(
            s.verify(&issued.token).unwrap().expires_at,
            issued.expires_at
        );
    }

    /// `iat` up to the leeway ahead is clock skew between instances, accepted; beyond, refused.
    #[test]
    fn a_token_issued_within_the_leeway_is_accepted_and_beyond_it_refused() {
        let s = service(3600);
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "7".into(),
            iat: now + LEEWAY_SECONDS as i64,
            exp: now + 600,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &s.encoding).unwrap();
        assert_eq!(s.verify(&token).unwrap().id, 7);
        // An hour ahead is not skew: refused.
        let claims = Claims {
            iat: now + 3600,
            ..claims
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &s.encoding).unwrap();
        assert!(s.verify(&token).is_err());
    }
}
